//! Step three: [`Checked`] -> [`Program`], the decision program. Every ASCII keyword of every rule
//! goes into one Aho-Corasick automaton, scanned once over the prompt (overlapping, so that
//! keywords inside other keywords are found); hits inside `prompt.last` and `prompt.system` are
//! told apart by position. Regexes (and keywords with non-ASCII letters) go into one `RegexSet` per
//! prompt text. Both scans, the character count and the token count are lazy: they run only when
//! a rule that reads them is reached, at most once per request.

mod tree;

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::Regex;
use regex_automata::meta::{self, Regex as MetaRegex};
use regex_automata::{Input, MatchKind as SetMatchKind, PatternSet};
use serde::Serialize;

use crate::catalog::Catalog;
use crate::policy::check::ir::{Checked, Cond, Fact, Lit, Operand, Rel, RuleIr, TextOp};
use crate::policy::eval::plan::{plan, Step};
use crate::policy::eval::request::SystemText;
use crate::policy::eval::{
    compare, contains_ascii_ci, keyword_regex, lit_value, needs_regex, simple_fact, starts_with_ascii_ci,
    tokens_by_length, Context, RequestFacts, V,
};
pub use tree::CCond;
use tree::{COperand, Fast, Src, StrSlot};

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
    /// Some rule reads a request header (so the gateway copies them into the request's facts).
    pub reads_headers: bool,
    /// The headers the rules read (lowercased), for the request log.
    pub headers: Vec<String>,
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
    /// The same conditions in the compact form the decision loop walks.
    fast: Vec<Fast>,
    index: Index,
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
    /// Automaton patterns found by the scan (each once per text).
    hits: Vec<u32>,
    /// Rules still to evaluate, as a bitset.
    cand: Vec<u64>,
    scanned: [bool; 3],
    re: [Option<PatternSet>; 3],
    re_done: [bool; 3],
    tokens: Option<u64>,
    chars: Option<u64>,
}

impl Scratch {
    fn reset(&mut self, p: &Program, req: &RequestFacts) {
        self.kw.clear();
        self.kw.resize(p.ac_len * 3, false);
        self.hits.clear();
        self.cand.clear();
        self.cand.extend_from_slice(&p.index.general);
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
        // Counts replayed from a request log stand in for the text they were taken from.
        self.tokens = req.known_tokens;
        self.chars = req.known_chars;
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
        prefilters: [Vec::new(), Vec::new(), Vec::new()],
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
                .kind(Some(AhoCorasickKind::DFA))
                .build(&b.keywords)
                .ok()
        })
        .flatten();
    let sets = b.regexes.clone().map(|pats| {
        (!pats.is_empty())
            .then(|| {
                MetaRegex::builder().configure(meta::Config::new().match_kind(SetMatchKind::All)).build_many(&pats).ok()
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
    let headers = std::cell::RefCell::new(Vec::<String>::new());
    for r in &checked.rules {
        r.cond.reads_any(&|f| {
            if let Fact::Header(h) = f {
                let mut hs = headers.borrow_mut();
                if !hs.contains(h) {
                    hs.push(h.clone());
                }
            }
            false
        });
    }
    let info = ProgramInfo {
        headers: headers.into_inner(),
        rules: checked.rules.len(),
        keywords: b.keywords.len(),
        regexes: b.regexes.iter().map(Vec::len).sum(),
        reads_tokens: checked.rules.iter().any(|r| r.cond.reads(&Fact::PromptTokens)),
        reads_headers: checked.rules.iter().any(|r| r.cond.reads_any(&|f| matches!(f, Fact::Header(_)))),
        has_catch_all: conds.iter().zip(&checked.rules).any(|(c, r)| !r.is_default && *c == CCond::Const(true)),
        providers,
    };
    let fast: Vec<Fast> = conds.iter().map(Fast::of).collect();
    let mut index = Index::new(&fast, b.keywords.len(), &b.regexes);
    index.literal_of_regex = vec![false; b.keywords.len()];
    for (i, pre) in b.prefilters.iter().enumerate() {
        index.re_prefiltered[i] = !pre.is_empty() && pre.iter().all(Option::is_some);
        for id in pre.iter().flatten().flat_map(|ids| ids.iter()) {
            if let Some(x) = index.literal_of_regex.get_mut(*id as usize) {
                *x = true;
            }
        }
    }
    Program { ac_len: b.keywords.len(), checked, conds, fast, index, ac, sets, info }
}

struct Builder {
    prefilters: [Vec<Option<Box<[u32]>>>; 3],
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
        let next = u32::try_from(self.regexes[src as usize].len()).unwrap_or(u32::MAX);
        let slot = *self.seen.entry((src as usize, pattern.clone())).or_insert(next);
        if slot == next {
            let pre = prefix_literals(&pattern).map(|lits| lits.iter().map(|l| self.keyword(l)).collect());
            self.regexes[src as usize].push(pattern);
            self.prefilters[src as usize].push(pre);
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
            Cond::Cmp { lhs, rel, rhs, label } => {
                let op = |o: &Operand| match o {
                    Operand::Fact(Fact::PromptTokens) => COperand::Tokens,
                    Operand::Fact(f) => COperand::Fact(f.clone()),
                    Operand::Lit(l) => COperand::Lit(l.clone()),
                };
                CCond::Cmp(op(lhs), *rel, op(rhs), label.as_str().into())
            }
            Cond::In { fact, list, negate, label } => {
                CCond::In(fact.clone(), list.clone().into(), *negate, label.as_str().into())
            }
            Cond::Text { fact, op, needles, label } => match Src::of(fact) {
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
                        ascii: needles.iter().filter(|n| !needs_regex(n)).map(|n| n.as_str().into()).collect(),
                        regexes,
                        label: label.as_str().into(),
                    }
                }
            },
            Cond::Regex { fact, pattern, label } => match Src::of(fact) {
                Some(src) => CCond::Re { src, slot: self.regex(src, pattern.clone()), label: label.as_str().into() },
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
        scratch.reset(self, req);
        let rule = self.first_match(req, ctx, scratch);
        Decision { rule, tokens: scratch.tokens }
    }

    /// The first rule that holds. Rules whose truth follows from one lookup are settled in bulk
    /// (equality on a key or request string, token bounds that the byte length rules out, keyword
    /// and regex hits once the lazy scans have run); the others are evaluated in order.
    fn first_match(&self, req: &RequestFacts, ctx: &Context<'_>, s: &mut Scratch) -> usize {
        let ix = &self.index;
        let n = self.fast.len();
        for (slot, table) in &ix.eq {
            if let Some(list) = slot_value(*slot, req, ctx).and_then(|v| table.get(v)) {
                list.iter().for_each(|r| set_bit(&mut s.cand, *r as usize));
            }
        }
        let bytes = req.prompt.len() as f64;
        for (t, ge, r) in ix.tokens.iter().take_while(|(t, ..)| *t <= bytes) {
            if *ge || *t < bytes {
                set_bit(&mut s.cand, *r as usize);
            }
        }
        let (mut kw_pending, mut re_pending) = (ix.kw_first < n, ix.re_first < n);
        let mut pos = 0;
        loop {
            let c = next_bit(&s.cand, pos).unwrap_or(n);
            if kw_pending && ix.kw_first <= c {
                kw_pending = false;
                for src in [Src::Prompt, Src::Last, Src::System] {
                    if ix.kw_srcs[src as usize] {
                        self.scan(src, req, s);
                    }
                }
                for i in 0..s.hits.len() {
                    let p = s.hits.get(i).copied().unwrap_or(0) as usize;
                    for (r, src) in ix.kw_of_pattern.get(p).map_or(&[][..], Vec::as_slice) {
                        if s.kw.get(p * 3 + *src as usize).copied().unwrap_or(false) {
                            set_bit(&mut s.cand, *r as usize);
                        }
                    }
                }
                continue;
            }
            if re_pending && ix.re_first <= c {
                re_pending = false;
                for src in [Src::Prompt, Src::Last, Src::System] {
                    let slots = ix.re_of_slot.get(src as usize).map_or(&[][..], Vec::as_slice);
                    if slots.iter().all(Vec::is_empty) {
                        continue;
                    }
                    self.regex_scan(src, req, s);
                    for (slot, rules) in slots.iter().enumerate() {
                        if !rules.is_empty() && set_hit(&s.re, src as usize, slot as u32) {
                            rules.iter().for_each(|r| set_bit(&mut s.cand, *r as usize));
                        }
                    }
                }
                continue;
            }
            if c >= n {
                return n.saturating_sub(1);
            }
            if self.fast.get(c).is_some_and(|f| self.eval_fast(c, f, req, ctx, s)) {
                return c;
            }
            pos = c + 1;
        }
    }

    fn eval_fast(&self, i: usize, f: &Fast, req: &RequestFacts, ctx: &Context<'_>, s: &mut Scratch) -> bool {
        match f {
            Fast::Const(b) => *b,
            Fast::StrEq { slot, ne, value } => (slot_value(*slot, req, ctx) == Some(&**value)) != *ne,
            Fast::Tokens { rel, n } => {
                if s.tokens.is_none() {
                    if let Some(v) = tokens_by_length(req.prompt.len(), *rel, *n) {
                        return v;
                    }
                }
                let t = *s.tokens.get_or_insert_with(|| crate::util::tokens::count(&req.prompt));
                compare(V::Num(t as f64), *rel, V::Num(*n))
            }
            Fast::Kw { src, all, ids } => {
                self.scan(*src, req, s);
                let base = *src as usize;
                let hit = |id: &u32| s.kw.get(*id as usize * 3 + base).copied().unwrap_or(false);
                if *all {
                    ids.iter().all(hit)
                } else {
                    ids.iter().any(hit)
                }
            }
            Fast::Re { src, slot } => {
                self.regex_scan(*src, req, s);
                set_hit(&s.re, *src as usize, *slot)
            }
            Fast::General => self.conds.get(i).is_some_and(|c| self.eval(c, req, ctx, s)),
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
        let name = |f: &Fact| crate::policy::check::names::fact_name(f, self.catalog());
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
                        if let Some(v) = tokens_by_length(req.prompt.len(), rel.flip(), *n) {
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
            CCond::Kw { src, ids, res, all, .. } => {
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
            CCond::DirectText { fact, op, ascii, regexes, .. } => {
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
                    TextOp::ContainsAll => ascii.iter().all(|n| test(n)) && regexes.iter().all(|r| r.is_match(text)),
                    _ => ascii.iter().any(|n| test(n)) || regexes.iter().any(|r| r.is_match(text)),
                }
            }
            CCond::DirectRe(f, re, _) => match simple_fact(f, req, ctx, &mut s.chars) {
                V::Str(text) => re.is_match(text),
                _ => false,
            },
        }
    }

    fn operand<'a>(&self, o: &'a COperand, req: &'a RequestFacts, ctx: &Context<'a>, s: &mut Scratch) -> V<'a> {
        match o {
            COperand::Lit(l) => lit_value(l),
            COperand::Fact(f) => simple_fact(f, req, ctx, &mut s.chars),
            COperand::Tokens => V::Num(*s.tokens.get_or_insert_with(|| crate::util::tokens::count(&req.prompt)) as f64),
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
                    if let Some(b) = s.kw.get_mut(m.pattern().as_usize() * 3 + Src::System as usize) {
                        *b = true;
                    }
                    s.hits.push(m.pattern().as_u32());
                }
            }
            s.scanned[Src::System as usize] = true;
            return;
        }
        for m in ac.find_overlapping_iter(req.prompt.as_str()) {
            let base = m.pattern().as_usize() * 3;
            if let Some(b) = s.kw.get_mut(base) {
                if !*b {
                    s.hits.push(m.pattern().as_u32());
                }
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
        if self.index.re_prefiltered.get(i).copied().unwrap_or(false) {
            // Every regex of this text has prefix literals: run the set only if one was found.
            self.scan(src, req, s);
            let possible = s.hits.iter().any(|p| {
                self.index.literal_of_regex.get(*p as usize).copied().unwrap_or(false)
                    && s.kw.get(*p as usize * 3 + i).copied().unwrap_or(false)
            });
            if !possible {
                return;
            }
        }
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

/// The prefix literals that every match of `pattern` starts with, when there are few enough and
/// none is empty. Used as a prefilter through the keyword automaton (which folds ASCII case, so it
/// finds a superset of the exact occurrences: still a necessary condition).
fn prefix_literals(pattern: &str) -> Option<Vec<String>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    let mut ex = Extractor::new();
    ex.kind(ExtractKind::Prefix).limit_total(64);
    let seq = ex.extract(&hir);
    let lits = seq.literals()?;
    if lits.is_empty() || lits.iter().any(|l| l.as_bytes().len() < 2) {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for l in lits {
        let s = String::from_utf8(l.as_bytes().to_vec()).ok()?.to_ascii_lowercase();
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Some(out)
}

/// Value -> the `slot == value` rules that hold for it.
type EqTable = HashMap<Box<str>, Vec<u32>>;

/// Rules settled in bulk, and how.
#[derive(Debug, Default)]
struct Index {
    /// Rules evaluated one by one (a bitset over rule indices).
    general: Vec<u64>,
    /// `slot == "value"` rules: slot -> value -> rules.
    eq: Vec<(StrSlot, EqTable)>,
    /// `prompt.tokens > t` (or `>=`) rules, by `t`: possible only when the prompt has more bytes.
    tokens: Vec<(f64, bool, u32)>,
    /// The first keyword rule (scanning waits until a decision reaches it).
    kw_first: usize,
    /// Which texts keyword rules read.
    kw_srcs: [bool; 3],
    /// Automaton pattern -> the keyword rules it settles.
    kw_of_pattern: Vec<Vec<(u32, Src)>>,
    /// The first regex rule.
    re_first: usize,
    /// Text -> set slot -> the regex rules it settles.
    re_of_slot: [Vec<Vec<u32>>; 3],
    /// Per text: every regex of its set has prefix literals (so the set can be skipped).
    re_prefiltered: [bool; 3],
    /// Automaton pattern -> whether it is the prefix literal of some regex.
    literal_of_regex: Vec<bool>,
}

impl Index {
    fn new(fast: &[Fast], patterns: usize, regexes: &[Vec<String>; 3]) -> Index {
        let mut ix = Index {
            general: vec![0; fast.len().div_ceil(64)],
            kw_first: usize::MAX,
            re_first: usize::MAX,
            kw_of_pattern: vec![Vec::new(); patterns],
            re_of_slot: [0, 1, 2].map(|i| vec![Vec::new(); regexes.get(i).map_or(0, Vec::len)]),
            ..Index::default()
        };
        for (i, f) in fast.iter().enumerate() {
            let r = u32::try_from(i).unwrap_or(u32::MAX);
            match f {
                Fast::StrEq { slot, ne: false, value } => {
                    let pos = ix.eq.iter().position(|(s, _)| s == slot).unwrap_or_else(|| {
                        ix.eq.push((*slot, HashMap::new()));
                        ix.eq.len() - 1
                    });
                    if let Some((_, t)) = ix.eq.get_mut(pos) {
                        t.entry(value.clone()).or_default().push(r);
                    }
                }
                Fast::Tokens { rel: rel @ (Rel::Gt | Rel::Ge), n } => ix.tokens.push((*n, *rel == Rel::Ge, r)),
                Fast::Kw { src, all: false, ids } => {
                    ix.kw_first = ix.kw_first.min(i);
                    ix.kw_srcs[*src as usize] = true;
                    for id in ids.iter() {
                        if let Some(v) = ix.kw_of_pattern.get_mut(*id as usize) {
                            v.push((r, *src));
                        }
                    }
                }
                Fast::Re { src, slot } => {
                    ix.re_first = ix.re_first.min(i);
                    if let Some(v) = ix.re_of_slot.get_mut(*src as usize).and_then(|v| v.get_mut(*slot as usize)) {
                        v.push(r);
                    }
                }
                _ => set_bit(&mut ix.general, i),
            }
        }
        ix.tokens.sort_by(|a, b| a.0.total_cmp(&b.0));
        ix
    }
}

fn slot_value<'a>(slot: StrSlot, req: &'a RequestFacts, ctx: &Context<'a>) -> Option<&'a str> {
    match slot {
        StrSlot::Tier => ctx.tier,
        StrSlot::Name => ctx.key_name,
        StrSlot::UserId => req.user_id.as_deref(),
        StrSlot::Model => req.model.as_deref(),
        StrSlot::Endpoint => Some(req.endpoint.as_str()),
    }
}

fn set_bit(bits: &mut [u64], i: usize) {
    if let Some(w) = bits.get_mut(i / 64) {
        *w |= 1 << (i % 64);
    }
}

/// The first set bit at or after `from`.
fn next_bit(bits: &[u64], from: usize) -> Option<usize> {
    let mut w = from / 64;
    let mut word = bits.get(w)? & (u64::MAX << (from % 64));
    loop {
        if word != 0 {
            return Some(w * 64 + word.trailing_zeros() as usize);
        }
        w += 1;
        word = *bits.get(w)?;
    }
}

fn set_hit(sets: &[Option<PatternSet>; 3], src: usize, slot: u32) -> bool {
    sets.get(src)
        .and_then(Option::as_ref)
        .and_then(|ps| regex_automata::PatternID::new(slot as usize).ok().map(|p| ps.contains(p)))
        .unwrap_or(false)
}
