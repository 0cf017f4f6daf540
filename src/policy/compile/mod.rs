//! Step three: [`Checked`] -> [`Program`], the decision program. Every ASCII keyword of every rule
//! goes into one Aho-Corasick automaton, scanned once over the prompt (overlapping, so that
//! keywords inside other keywords are found); hits inside `prompt.last` and `prompt.system` are
//! told apart by position. Regexes (and keywords with non-ASCII letters) go into one `RegexSet` per
//! prompt text. Both scans, the character count and the token count are lazy: they run only when
//! a rule that reads them is reached, at most once per request.

mod tree;

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::Regex;
use regex_automata::meta::{self, Regex as MetaRegex};
use regex_automata::{Input, MatchKind as SetMatchKind, PatternSet};
use serde::Serialize;

use crate::catalog::Catalog;
use crate::policy::check::ir::{Checked, Cond, Fact, Lit, Operand, Rel, RuleIr, TextOp};
use crate::policy::eval::plan::{plan, Step};
use crate::policy::eval::request::SystemText;
use crate::policy::eval::{
    compare, contains_ascii_ci, count_tokens, keyword_regex, lit_value, needs_regex, simple_fact,
    starts_with_ascii_ci, tokens_by_length, Context, RequestFacts, V,
};
pub use tree::CCond;
use tree::{COperand, Src};

/// Facts about a compiled program.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ProgramInfo {
    /// Rules, the default included.
    pub rules: usize,
    /// Distinct ASCII keywords in the automaton.
    pub keywords: usize,
    /// Regexes in the regex sets.
    pub regexes: usize,
    /// Some rule reads `prompt.tokens`.
    pub reads_tokens: bool,
    /// Some rule before the default always matches.
    pub has_catch_all: bool,
    /// Providers of the models the policy names.
    pub providers: Vec<String>,
}

/// A compiled policy.
pub struct Program {
    /// The checked policy (rule names, spans, targets, catalog).
    pub checked: Checked,
    conds: Vec<CCond>,
    ac: Option<AhoCorasick>,
    ac_len: usize,
    /// One regex set per prompt text (regex-automata's meta regex, so that matching can write
    /// into a reusable `PatternSet` instead of allocating one per search).
    sets: [Option<MetaRegex>; 3],
    /// Facts about the program.
    pub info: ProgramInfo,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("version", &self.checked.version)
            .field("conds", &self.conds)
            .field("info", &self.info)
            .finish()
    }
}

/// Per-request working memory, reused across requests to keep decisions allocation-free.
#[derive(Debug, Default)]
pub struct Scratch {
    kw: Vec<bool>,
    scanned: [bool; 3],
    re: [Option<PatternSet>; 3],
    re_done: [bool; 3],
    tokens: Option<u64>,
    chars: Option<u64>,
}

impl Scratch {
    fn reset(&mut self, p: &Program) {
        self.kw.clear();
        self.kw.resize(p.ac_len * 3, false);
        self.scanned = [false; 3];
        for (i, set) in p.sets.iter().enumerate() {
            if let Some(slot) = self.re.get_mut(i) {
                let want = set.as_ref().map_or(0, MetaRegex::pattern_len);
                match slot {
                    Some(ps) if ps.capacity() == want => ps.clear(),
                    _ => *slot = Some(PatternSet::new(want)),
                }
            }
        }
        self.re_done = [false; 3];
        self.tokens = None;
        self.chars = None;
    }
}

/// The outcome of a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Index of the matched rule (the default is the last).
    pub rule: usize,
    /// The token count, when a rule needed it.
    pub tokens: Option<u64>,
}

/// Compiles a checked policy.
pub fn compile(checked: Checked) -> Program {
    let mut b = Builder {
        keywords: Vec::new(),
        regexes: [Vec::new(), Vec::new(), Vec::new()],
        seen: HashMap::new(),
    };
    let conds: Vec<CCond> = checked.rules.iter().map(|r| b.cond(&r.cond)).collect();
    let ac = (!b.keywords.is_empty())
        .then(|| {
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .build(&b.keywords)
                .ok()
        })
        .flatten();
    let sets = b.regexes.clone().map(|pats| {
        (!pats.is_empty())
            .then(|| {
                MetaRegex::builder()
                    .configure(meta::Config::new().match_kind(SetMatchKind::All))
                    .build_many(&pats)
                    .ok()
            })
            .flatten()
    });
    let mut providers: Vec<String> = Vec::new();
    for r in &checked.rules {
        r.target.explicit_models(&mut |m| {
            if let Some(p) = checked.catalog.get(m).map(|m| m.provider.clone()) {
                if !providers.contains(&p) && !p.is_empty() {
                    providers.push(p);
                }
            }
        });
    }
    let info = ProgramInfo {
        rules: checked.rules.len(),
        keywords: b.keywords.len(),
        regexes: b.regexes.iter().map(Vec::len).sum(),
        reads_tokens: checked
            .rules
            .iter()
            .any(|r| r.cond.reads(&Fact::PromptTokens)),
        has_catch_all: conds
            .iter()
            .zip(&checked.rules)
            .any(|(c, r)| !r.is_default && *c == CCond::Const(true)),
        providers,
    };
    Program {
        ac_len: b.keywords.len(),
        checked,
        conds,
        ac,
        sets,
        info,
    }
}

struct Builder {
    keywords: Vec<String>,
    regexes: [Vec<String>; 3],
    /// Dedup: (scan, text) -> slot. Scan 3 is the keyword automaton.
    seen: HashMap<(usize, String), u32>,
}

impl Builder {
    fn keyword(&mut self, k: &str) -> u32 {
        let lower = k.to_ascii_lowercase();
        let next = u32::try_from(self.keywords.len()).unwrap_or(u32::MAX);
        let slot = *self.seen.entry((3, lower.clone())).or_insert(next);
        if slot == next {
            self.keywords.push(lower);
        }
        slot
    }

    fn regex(&mut self, src: Src, pattern: String) -> u32 {
        let list = &mut self.regexes[src as usize];
        let next = u32::try_from(list.len()).unwrap_or(u32::MAX);
        let slot = *self
            .seen
            .entry((src as usize, pattern.clone()))
            .or_insert(next);
        if slot == next {
            list.push(pattern);
        }
        slot
    }

    fn cond(&mut self, c: &Cond) -> CCond {
        match c {
            Cond::Const(b) => CCond::Const(*b),
            Cond::And(cs) => CCond::And(cs.iter().map(|c| self.cond(c)).collect()),
            Cond::Or(cs) => CCond::Or(cs.iter().map(|c| self.cond(c)).collect()),
            Cond::Not(c) => CCond::Not(Box::new(self.cond(c))),
            Cond::Named(i, c) => CCond::Named(*i, Box::new(self.cond(c))),
            Cond::Truthy { fact, label } => CCond::Truthy(fact.clone(), label.as_str().into()),
            Cond::Cmp {
                lhs,
                rel,
                rhs,
                label,
            } => {
                let op = |o: &Operand| match o {
                    Operand::Fact(Fact::PromptTokens) => COperand::Tokens,
                    Operand::Fact(f) => COperand::Fact(f.clone()),
                    Operand::Lit(l) => COperand::Lit(l.clone()),
                };
                CCond::Cmp(op(lhs), *rel, op(rhs), label.as_str().into())
            }
            Cond::In {
                fact,
                list,
                negate,
                label,
            } => CCond::In(
                fact.clone(),
                list.clone().into(),
                *negate,
                label.as_str().into(),
            ),
            Cond::Text {
                fact,
                op,
                needles,
                label,
            } => match Src::of(fact) {
                Some(src) if *op != TextOp::StartsWith => {
                    let mut ids = Vec::new();
                    let mut res = Vec::new();
                    for n in needles {
                        if needs_regex(n) {
                            res.push(self.regex(src, keyword_regex(n, false)));
                        } else {
                            ids.push(self.keyword(n));
                        }
                    }
                    CCond::Kw {
                        src,
                        ids: ids.into(),
                        res: res.into(),
                        all: *op == TextOp::ContainsAll,
                        label: label.as_str().into(),
                    }
                }
                _ => {
                    let anchored = *op == TextOp::StartsWith;
                    let regexes = needles
                        .iter()
                        .filter(|n| needs_regex(n))
                        .filter_map(|n| Regex::new(&keyword_regex(n, anchored)).ok())
                        .collect();
                    CCond::DirectText {
                        fact: fact.clone(),
                        op: *op,
                        ascii: needles
                            .iter()
                            .filter(|n| !needs_regex(n))
                            .map(|n| n.as_str().into())
                            .collect(),
                        regexes,
                        label: label.as_str().into(),
                    }
                }
            },
            Cond::Regex {
                fact,
                pattern,
                label,
            } => match Src::of(fact) {
                Some(src) => CCond::Re {
                    src,
                    slot: self.regex(src, pattern.clone()),
                    label: label.as_str().into(),
                },
                None => match Regex::new(pattern) {
                    Ok(re) => CCond::DirectRe(fact.clone(), Box::new(re), label.as_str().into()),
                    Err(_) => CCond::Const(false),
                },
            },
        }
    }
}

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
}

impl Program {
    /// The policy version.
    pub fn version(&self) -> &str {
        &self.checked.version
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.checked.catalog
    }

    /// A rule by index.
    pub fn rule(&self, i: usize) -> Option<&RuleIr> {
        self.checked.rules.get(i)
    }

    /// Decides which rule routes a request. Allocation-free once `scratch` has been used with this
    /// program, unless a rule reads `prompt.tokens` (the tokenizer allocates).
    pub fn decide(&self, req: &RequestFacts, ctx: &Context<'_>, scratch: &mut Scratch) -> Decision {
        scratch.reset(self);
        let last = self.conds.len().saturating_sub(1);
        let rule = self
            .conds
            .iter()
            .position(|c| self.eval(c, req, ctx, scratch))
            .unwrap_or(last);
        Decision {
            rule,
            tokens: scratch.tokens,
        }
    }

    /// Decides and expands the plan.
    pub fn route<'p>(
        &'p self,
        req: &RequestFacts,
        ctx: &Context<'_>,
        scratch: &mut Scratch,
    ) -> (Decision, Vec<Step<'p>>) {
        let mut d = self.decide(req, ctx, scratch);
        let steps = match self.rule(d.rule) {
            Some(r) => plan(r, self.catalog(), req, ctx, &mut d.tokens),
            None => Vec::new(),
        };
        (d, steps)
    }

    /// The `explain` trace: every rule, every condition, the plan.
    pub fn explain<'p>(&'p self, req: &RequestFacts, ctx: &Context<'_>) -> Trace<'p> {
        let mut scratch = Scratch::default();
        let (mut d, _) = self.route(req, ctx, &mut scratch);
        scratch.reset(self);
        let mut rules = Vec::new();
        let mut lets: Vec<LetTrace> = Vec::new();
        for (i, (c, r)) in self.conds.iter().zip(&self.checked.rules).enumerate() {
            let mut conditions = Vec::new();
            let holds = self.trace(c, req, ctx, &mut scratch, &mut conditions, &mut lets);
            rules.push(RuleTrace {
                name: r.name.clone(),
                holds,
                matched: i == d.rule,
                conditions,
            });
        }
        d.tokens = d.tokens.or(scratch.tokens);
        let steps = match self.rule(d.rule) {
            Some(r) => plan(r, self.catalog(), req, ctx, &mut d.tokens),
            None => Vec::new(),
        };
        let mut notes = Vec::new();
        if d.tokens.is_some() {
            notes.push(
                "prompt.tokens counts o200k tokens: an estimate for models of other families"
                    .to_string(),
            );
        }
        Trace {
            version: self.checked.version.clone(),
            rule: self
                .rule(d.rule)
                .map(|r| r.name.clone())
                .unwrap_or_default(),
            rules,
            lets,
            plan: steps,
            tokens: d.tokens,
            notes,
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
                let vals: Vec<bool> = cs
                    .iter()
                    .map(|c| self.trace(c, req, ctx, s, out, lets))
                    .collect();
                vals.iter().all(|v| *v)
            }
            CCond::Or(cs) => {
                let vals: Vec<bool> = cs
                    .iter()
                    .map(|c| self.trace(c, req, ctx, s, out, lets))
                    .collect();
                vals.iter().any(|v| *v)
            }
            CCond::Not(x) => {
                let mut inner = Vec::new();
                let v = !self.trace(x, req, ctx, s, &mut inner, lets);
                for t in inner {
                    out.push(CondTrace {
                        condition: format!("not ({})", t.condition),
                        value: !t.value,
                        fact: t.fact,
                    });
                }
                v
            }
            CCond::Named(i, x) => {
                let v = self.trace(x, req, ctx, s, &mut Vec::new(), lets);
                let name = self.checked.lets.get(*i).cloned().unwrap_or_default();
                if !lets.iter().any(|l| l.name == name) {
                    lets.push(LetTrace {
                        name: name.clone(),
                        value: v,
                    });
                }
                out.push(CondTrace {
                    condition: name,
                    value: v,
                    fact: None,
                });
                v
            }
            leaf => {
                let v = self.eval(leaf, req, ctx, s);
                let (label, fact) = self.leaf_label(leaf, req, ctx, s);
                out.push(CondTrace {
                    condition: label,
                    value: v,
                    fact,
                });
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
        let name = |f: &Fact| crate::policy::check::names::fact_name(f, self.catalog());
        let show = |f: &Fact, s: &mut Scratch| -> Option<String> {
            if f.is_prompt_text() {
                return None;
            }
            Some(format!(
                "{} = {}",
                name(f),
                simple_fact(f, req, ctx, &mut s.chars).display()
            ))
        };
        match c {
            CCond::Const(b) => (b.to_string(), None),
            CCond::Truthy(f, l) | CCond::In(f, _, _, l) | CCond::DirectRe(f, _, l) => {
                (l.to_string(), show(f, s))
            }
            CCond::DirectText { fact, label, .. } => (label.to_string(), show(fact, s)),
            CCond::Cmp(a, _, b, l) => {
                let f = [a, b].into_iter().find_map(|o| match o {
                    COperand::Fact(f) => show(f, s),
                    COperand::Tokens => Some(match s.tokens {
                        Some(t) => format!("prompt.tokens = {t}"),
                        None => format!(
                            "prompt.tokens <= {} (decided by length, not counted)",
                            req.prompt.len()
                        ),
                    }),
                    COperand::Lit(_) => None,
                });
                (l.to_string(), f)
            }
            CCond::Kw { label, .. } | CCond::Re { label, .. } => (label.to_string(), None),
            _ => (String::new(), None),
        }
    }

    fn eval(&self, c: &CCond, req: &RequestFacts, ctx: &Context<'_>, s: &mut Scratch) -> bool {
        match c {
            CCond::Const(b) => *b,
            CCond::And(cs) => cs.iter().all(|c| self.eval(c, req, ctx, s)),
            CCond::Or(cs) => cs.iter().any(|c| self.eval(c, req, ctx, s)),
            CCond::Not(c) => !self.eval(c, req, ctx, s),
            CCond::Named(_, c) => self.eval(c, req, ctx, s),
            CCond::Truthy(f, _) => simple_fact(f, req, ctx, &mut s.chars) == V::Bool(true),
            CCond::Cmp(a, rel, b, _) => {
                // Token counts: settle by length when possible, count at most once otherwise.
                if let (COperand::Tokens, COperand::Lit(Lit::Num(n))) = (a, b) {
                    if s.tokens.is_none() {
                        if let Some(v) = tokens_by_length(req.prompt.len(), *rel, *n) {
                            return v;
                        }
                    }
                }
                if let (COperand::Lit(Lit::Num(n)), COperand::Tokens) = (a, b) {
                    if s.tokens.is_none() {
                        if let Some(v) = tokens_by_length(req.prompt.len(), flip(*rel), *n) {
                            return v;
                        }
                    }
                }
                let x = self.operand(a, req, ctx, s);
                let y = self.operand(b, req, ctx, s);
                compare(x, *rel, y)
            }
            CCond::In(f, list, negate, _) => {
                let v = simple_fact(f, req, ctx, &mut s.chars);
                let found = v != V::None && list.iter().any(|l| lit_value(l) == v);
                found != *negate
            }
            CCond::Kw {
                src, ids, res, all, ..
            } => {
                self.scan(*src, req, s);
                let base = *src as usize;
                if !res.is_empty() {
                    self.regex_scan(*src, req, s);
                }
                let kw_hit = |i: &u32| s.kw.get(*i as usize * 3 + base).copied().unwrap_or(false);
                let re_hit = |i: &u32| set_hit(&s.re, base, *i);
                if *all {
                    ids.iter().all(kw_hit) && res.iter().all(re_hit)
                } else {
                    ids.iter().any(kw_hit) || res.iter().any(re_hit)
                }
            }
            CCond::Re { src, slot, .. } => {
                self.regex_scan(*src, req, s);
                set_hit(&s.re, *src as usize, *slot)
            }
            CCond::DirectText {
                fact,
                op,
                ascii,
                regexes,
                ..
            } => {
                let V::Str(text) = simple_fact(fact, req, ctx, &mut s.chars) else {
                    return false;
                };
                let test = |n: &str| {
                    if *op == TextOp::StartsWith {
                        starts_with_ascii_ci(text, n)
                    } else {
                        contains_ascii_ci(text, n)
                    }
                };
                match op {
                    TextOp::ContainsAll => {
                        ascii.iter().all(|n| test(n)) && regexes.iter().all(|r| r.is_match(text))
                    }
                    _ => ascii.iter().any(|n| test(n)) || regexes.iter().any(|r| r.is_match(text)),
                }
            }
            CCond::DirectRe(f, re, _) => match simple_fact(f, req, ctx, &mut s.chars) {
                V::Str(text) => re.is_match(text),
                _ => false,
            },
        }
    }

    fn operand<'a>(
        &self,
        o: &'a COperand,
        req: &'a RequestFacts,
        ctx: &Context<'a>,
        s: &mut Scratch,
    ) -> V<'a> {
        match o {
            COperand::Lit(l) => lit_value(l),
            COperand::Fact(f) => simple_fact(f, req, ctx, &mut s.chars),
            COperand::Tokens => {
                V::Num(*s.tokens.get_or_insert_with(|| count_tokens(&req.prompt)) as f64)
            }
        }
    }

    /// Runs the keyword automaton once over the prompt, recording hits for `prompt`, and for
    /// `prompt.last` and `prompt.system` by position.
    fn scan(&self, src: Src, req: &RequestFacts, s: &mut Scratch) {
        if s.scanned[src as usize] {
            return;
        }
        let Some(ac) = &self.ac else {
            s.scanned = [true; 3];
            return;
        };
        let last = req.last.clone();
        let system = match &req.system {
            SystemText::Range(r) => Some(r.clone()),
            SystemText::Own(_) => None,
        };
        if src == Src::System && system.is_none() {
            if let SystemText::Own(text) = &req.system {
                for m in ac.find_overlapping_iter(text.as_str()) {
                    if let Some(b) =
                        s.kw.get_mut(m.pattern().as_usize() * 3 + Src::System as usize)
                    {
                        *b = true;
                    }
                }
            }
            s.scanned[Src::System as usize] = true;
            return;
        }
        for m in ac.find_overlapping_iter(req.prompt.as_str()) {
            let base = m.pattern().as_usize() * 3;
            if let Some(b) = s.kw.get_mut(base) {
                *b = true;
            }
            if m.start() >= last.start && m.end() <= last.end {
                if let Some(b) = s.kw.get_mut(base + Src::Last as usize) {
                    *b = true;
                }
            }
            if let Some(r) = &system {
                if m.start() >= r.start && m.end() <= r.end {
                    if let Some(b) = s.kw.get_mut(base + Src::System as usize) {
                        *b = true;
                    }
                }
            }
        }
        s.scanned[Src::Prompt as usize] = true;
        s.scanned[Src::Last as usize] = true;
        if system.is_some() {
            s.scanned[Src::System as usize] = true;
        }
    }

    fn regex_scan(&self, src: Src, req: &RequestFacts, s: &mut Scratch) {
        let i = src as usize;
        if s.re_done[i] {
            return;
        }
        s.re_done[i] = true;
        let text = match src {
            Src::Prompt => req.prompt.as_str(),
            Src::Last => req.prompt_last(),
            Src::System => req.prompt_system(),
        };
        if let (Some(Some(set)), Some(Some(ps))) = (self.sets.get(i), s.re.get_mut(i)) {
            set.which_overlapping_matches(&Input::new(text), ps);
        }
    }
}

fn set_hit(sets: &[Option<PatternSet>; 3], src: usize, slot: u32) -> bool {
    sets.get(src)
        .and_then(Option::as_ref)
        .and_then(|ps| {
            regex_automata::PatternID::new(slot as usize)
                .ok()
                .map(|p| ps.contains(p))
        })
        .unwrap_or(false)
}

fn flip(r: Rel) -> Rel {
    match r {
        Rel::Lt => Rel::Gt,
        Rel::Le => Rel::Ge,
        Rel::Gt => Rel::Lt,
        Rel::Ge => Rel::Le,
        other => other,
    }
}
