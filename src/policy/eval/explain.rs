//! `explain`: [`Program`] x [`RequestFacts`] x [`Context`] -> [`Trace`], every rule with the value
//! of each condition (no short circuit), the named conditions, the matched rule and its plan; and
//! [`render`], the trace as the CLI prints it.

use serde::Serialize;

use super::decide::Scratch;
use super::plan::{plan, Step};
use super::{simple_fact, Context, RequestFacts};
use crate::policy::compile::tree::{CCond, COperand};
use crate::policy::compile::Program;
use crate::policy::ir::Fact;

/// One condition's value for `explain`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CondTrace {
    /// The condition as written (formatted).
    pub condition: String,
    /// Its value.
    pub value: bool,
    /// The values of the facts it read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fact: Option<String>,
}

/// One rule in an `explain` trace.
#[derive(Clone, Debug, Serialize)]
pub struct RuleTrace {
    /// The rule's name.
    pub name: String,
    /// Whether its whole condition holds.
    pub holds: bool,
    /// Whether it is the rule that routed the request.
    pub matched: bool,
    /// Its conditions, leaf by leaf.
    pub conditions: Vec<CondTrace>,
}

/// A named condition's value.
#[derive(Clone, Debug, Serialize)]
pub struct LetTrace {
    /// The `let` name.
    pub name: String,
    /// Its value.
    pub value: bool,
}

/// The full `explain` answer.
#[derive(Clone, Debug, Serialize)]
pub struct Trace<'p> {
    /// The policy version.
    pub version: String,
    /// The matched rule's name (or `default`).
    pub rule: String,
    /// Every rule in order.
    pub rules: Vec<RuleTrace>,
    /// Named conditions.
    pub lets: Vec<LetTrace>,
    /// The targets in order.
    pub plan: Vec<Step<'p>>,
    /// The token count, when it was computed.
    pub tokens: Option<u64>,
    /// Notes (estimates and the like).
    pub notes: Vec<String>,
    /// The matched rule's cache, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheTrace>,
}

/// How the matched rule caches, as `explain` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct CacheTrace {
    /// `exact` or `semantic`.
    pub kind: &'static str,
    /// The lifetime, in seconds.
    pub ttl_s: f64,
    /// `key` (each key its own) or `tier` (`shared`).
    pub scope: &'static str,
    /// The similarity threshold (semantic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The embeddings model (semantic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl CacheTrace {
    fn of(c: &crate::policy::ir::CacheIr, catalog: &crate::catalog::Catalog) -> CacheTrace {
        #[expect(clippy::cast_precision_loss, reason = "lifetimes are far below 2^52 ms")]
        let ttl_s = c.ttl_ms as f64 / 1000.0;
        CacheTrace {
            kind: if c.similar.is_some() { "semantic" } else { "exact" },
            ttl_s,
            scope: if c.shared { "tier" } else { "key" },
            threshold: c.similar.as_ref().map(|s| s.threshold),
            model: c.similar.as_ref().and_then(|s| catalog.get(s.model)).map(|m| m.name.clone()),
        }
    }
}

impl Program {
    /// The `explain` trace: every rule, every condition, the plan.
    pub fn explain<'p>(&'p self, req: &RequestFacts, ctx: &Context<'_>) -> Trace<'p> {
        let mut scratch = Scratch::default();
        let mut d = self.decide(req, ctx, &mut scratch);
        scratch.reset(self, req);
        let mut rules = Vec::new();
        let mut lets: Vec<LetTrace> = Vec::new();
        for (i, (c, r)) in self.conds.iter().zip(&self.checked.rules).enumerate() {
            let mut conditions = Vec::new();
            let holds = self.trace(c, req, ctx, &mut scratch, &mut conditions, &mut lets);
            rules.push(RuleTrace { name: r.name.clone(), holds, matched: i == d.rule, conditions });
        }
        d.tokens = d.tokens.or(scratch.tokens);
        let steps = match self.rule(d.rule) {
            Some(r) => plan(r, self.catalog(), req, ctx, &mut d.tokens),
            None => Vec::new(),
        };
        let mut notes = Vec::new();
        if d.tokens.is_some() {
            notes.push("prompt.tokens counts o200k tokens: an estimate for models of other families".to_string());
        }
        Trace {
            version: self.checked.version.clone(),
            rule: self.rule(d.rule).map(|r| r.name.clone()).unwrap_or_default(),
            rules,
            lets,
            plan: steps,
            tokens: d.tokens,
            notes,
            cache: self.rule(d.rule).and_then(|r| r.options.cache.as_ref()).map(|c| CacheTrace::of(c, self.catalog())),
        }
    }

    fn trace(
        &self,
        c: &CCond,
        req: &RequestFacts,
        ctx: &Context<'_>,
        s: &mut Scratch,
        out: &mut Vec<CondTrace>,
        lets: &mut Vec<LetTrace>,
    ) -> bool {
        match c {
            // Every term is traced (no short circuit), so `explain` shows all of them.
            CCond::And(cs) => {
                let vals: Vec<bool> = cs.iter().map(|c| self.trace(c, req, ctx, s, out, lets)).collect();
                vals.iter().all(|v| *v)
            }
            CCond::Or(cs) => {
                let vals: Vec<bool> = cs.iter().map(|c| self.trace(c, req, ctx, s, out, lets)).collect();
                vals.iter().any(|v| *v)
            }
            CCond::Not(x) => {
                let mut inner = Vec::new();
                let v = !self.trace(x, req, ctx, s, &mut inner, lets);
                for t in inner {
                    out.push(CondTrace { condition: format!("not ({})", t.condition), value: !t.value, fact: t.fact });
                }
                v
            }
            CCond::Named(i, x) => {
                let v = self.trace(x, req, ctx, s, &mut Vec::new(), lets);
                let name = self.checked.lets.get(*i).cloned().unwrap_or_default();
                if !lets.iter().any(|l| l.name == name) {
                    lets.push(LetTrace { name: name.clone(), value: v });
                }
                out.push(CondTrace { condition: name, value: v, fact: None });
                v
            }
            leaf => {
                let v = self.eval(leaf, req, ctx, s);
                let (label, fact) = self.leaf_label(leaf, req, ctx, s);
                out.push(CondTrace { condition: label, value: v, fact });
                v
            }
        }
    }

    fn leaf_label(
        &self,
        c: &CCond,
        req: &RequestFacts,
        ctx: &Context<'_>,
        s: &mut Scratch,
    ) -> (String, Option<String>) {
        let name = |f: &Fact| crate::policy::ir::names::fact_name(f, self.catalog());
        let show = |f: &Fact, s: &mut Scratch| -> Option<String> {
            if f.is_prompt_text() {
                return None;
            }
            Some(format!("{} = {}", name(f), simple_fact(f, req, ctx, &mut s.chars).display()))
        };
        match c {
            CCond::Const(b) => (b.to_string(), None),
            CCond::Truthy(f, l) | CCond::In(f, _, _, l) | CCond::DirectRe(f, _, l) => (l.to_string(), show(f, s)),
            CCond::DirectText { fact, label, .. } => (label.to_string(), show(fact, s)),
            CCond::Cmp(a, _, b, l) => {
                let f = [a, b].into_iter().find_map(|o| match o {
                    COperand::Fact(f) => show(f, s),
                    COperand::Tokens => Some(match s.tokens {
                        Some(t) => format!("prompt.tokens = {t}"),
                        None => format!("prompt.tokens <= {} (decided by length, not counted)", req.prompt.len()),
                    }),
                    COperand::Lit(_) => None,
                });
                (l.to_string(), f)
            }
            CCond::Kw { label, .. } | CCond::Re { label, .. } => (label.to_string(), None),
            _ => (String::new(), None),
        }
    }
}

/// The trace as `yardmaster explain` prints it: every rule (`✗` tried and false, `→` matched,
/// `·` after the match) with each condition's value and the facts it read, the named conditions,
/// and the plan. `source` names the policy (its entry file).
pub fn render(trace: &Trace<'_>, req: &RequestFacts, source: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "policy {} ({source})", trace.version);
    let _ = writeln!(
        out,
        "request: {} message{}, {} bytes, model {}\n",
        req.messages,
        if req.messages == 1 { "" } else { "s" },
        req.prompt.len(),
        req.model.as_deref().map_or("none".into(), |m| format!("{m:?}"))
    );
    let width = trace
        .rules
        .iter()
        .flat_map(|r| r.conditions.iter().map(|c| c.condition.chars().count()))
        .max()
        .unwrap_or(10)
        .min(60);
    let mut reached = true;
    for r in &trace.rules {
        let (mark, tail) = match (r.matched, reached) {
            (true, _) => ("→", "  ← matched"),
            (false, true) => ("✗", ""),
            (false, false) => ("·", "  (after the match)"),
        };
        let title = if r.name == "default" { "default".to_string() } else { format!("rule {:?}", r.name) };
        let _ = writeln!(out, "{mark} {title}{tail}");
        for c in &r.conditions {
            let fact = c.fact.as_ref().map(|f| format!("   ({f})")).unwrap_or_default();
            let _ = writeln!(out, "    {:<width$}  {}{}", c.condition, c.value, fact, width = width);
        }
        reached &= !r.matched;
    }
    if !trace.lets.is_empty() {
        out.push_str("\nnamed conditions:\n");
        for l in &trace.lets {
            let _ = writeln!(out, "    {} = {}", l.name, l.value);
        }
    }
    let _ = writeln!(out, "\nplan for {:?}:", trace.rule);
    if trace.plan.is_empty() {
        out.push_str("    (no target)\n");
    }
    for (i, s) in trace.plan.iter().enumerate() {
        match s.deny {
            Some((status, msg)) => _ = writeln!(out, "    {}. deny {status} {msg:?}", i + 1),
            None => _ = writeln!(out, "    {}. {:<20} {}", i + 1, s.name, s.reason),
        }
    }
    if let Some(c) = &trace.cache {
        let scope = if c.scope == "tier" { "shared by the tier" } else { "per key" };
        match (&c.model, c.threshold) {
            (Some(m), Some(t)) => {
                _ = writeln!(out, "\ncache: semantic, {}s, {scope}, similar {:.0}% using {m}", c.ttl_s, t * 100.0);
            }
            _ => _ = writeln!(out, "\ncache: exact, {}s, {scope}", c.ttl_s),
        }
    }
    for n in &trace.notes {
        let _ = writeln!(out, "\nnote: {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::eval::StaticHealth;
    use crate::policy::{build_from, load};

    const POLICY: &str = r#"let code_words = ["traceback", "fn main"]
let is_code = prompt contains any code_words

rule "secrets" {
  when prompt matches /AKIA[0-9A-Z]{16}/
  then deny 403 "no credentials"
}

rule "code" {
  when is_code and not request.stream
  then codestral -> gpt-4o-mini
}

rule "premium" {
  when user.tier == "premium"
  then gpt-4o
}

default {
  then gpt-4o-mini
}
"#;

    #[test]
    fn the_trace_renders_every_rule_the_match_and_the_plan() {
        let (program, diags, _) = build_from(load::load_text(Path::new("explain.route"), POLICY), None);
        let program = program.unwrap_or_else(|| panic!("{diags:?}"));
        let body = serde_json::json!({"model": "auto", "messages": [
            {"role": "user", "content": "Why does fn main() panic?"}]});
        let req = RequestFacts::from_chat(&body).unwrap_or_default();
        let health = StaticHealth { down: program.catalog().id("codestral").into_iter().collect(), latency: vec![] };
        let ctx = Context { tier: Some("free"), ..Context::anonymous(&health) };
        let trace = program.explain(&req, &ctx);
        insta::assert_snapshot!(render(&trace, &req, "explain.route"));
    }
}
