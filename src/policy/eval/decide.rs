//! The compiled program's runtime: [`Program`] x [`RequestFacts`] x [`Context`] -> [`Decision`]
//! (the first rule that holds) and [`Routing`] (that rule with its plan). Rules that the index
//! settles in bulk are looked up; the others are evaluated in order, with the keyword and regex
//! scans, the character count and the token count run lazily, at most once per request, in the
//! reusable [`Scratch`].

use regex_automata::meta::Regex as MetaRegex;
use regex_automata::{Input, PatternSet};

use super::plan::{plan, Step};
use super::request::SystemText;
use super::{simple_fact, Context, RequestFacts};
use crate::policy::compile::index::{next_bit, set_bit, set_hit};
use crate::policy::compile::tree::{CCond, COperand, Fast, Src, StrSlot};
use crate::policy::compile::Program;
use crate::policy::ir::value::{compare, contains_ascii_ci, lit_value, starts_with_ascii_ci, tokens_by_length, V};
use crate::policy::ir::{Lit, TargetIr, TextOp};

/// Per-request working memory, reused across requests to keep decisions allocation-free.
#[derive(Debug, Default)]
pub struct Scratch {
    pub(crate) kw: Vec<bool>,
    /// Automaton patterns found by the scan (each once per text).
    pub(crate) hits: Vec<u32>,
    /// Rules still to evaluate, as a bitset.
    pub(crate) cand: Vec<u64>,
    pub(crate) scanned: [bool; 3],
    pub(crate) re: [Option<PatternSet>; 3],
    pub(crate) re_done: [bool; 3],
    pub(crate) tokens: Option<u64>,
    pub(crate) chars: Option<u64>,
}

impl Scratch {
    pub(crate) fn reset(&mut self, p: &Program, req: &RequestFacts) {
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

/// A routed request: the rule that matched, its options and its plan, everything dispatch needs
/// without reading the policy's IR.
#[derive(Debug)]
pub struct Routing<'p> {
    /// Index of the matched rule (the default is the last).
    pub index: usize,
    /// The matched rule's name (`default` for the default).
    pub rule: &'p str,
    /// `retries N` of the rule.
    pub retries: u32,
    /// `timeout` of the rule, in ms.
    pub timeout_ms: Option<u64>,
    /// `cache` of the rule.
    pub cache: Option<&'p crate::policy::ir::CacheIr>,
    /// The plan: every target in order, taken or skipped with its reason.
    pub steps: Vec<Step<'p>>,
    /// The name the client asked for, when the rule's whole target is `requested` and the catalog
    /// does not have it (the gateway answers 404).
    pub unknown_requested: Option<String>,
    /// The token count, when a rule or a context check needed it.
    pub tokens: Option<u64>,
}

impl Routing<'_> {
    /// The `deny` that ends the plan, when it has one: status and message.
    pub fn deny(&self) -> Option<(u16, &str)> {
        self.steps.iter().find_map(|s| s.deny)
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

impl Program {
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

    /// Decides and expands the plan: the [`Routing`] that the gateway dispatches.
    pub fn route<'p>(&'p self, req: &RequestFacts, ctx: &Context<'_>, scratch: &mut Scratch) -> Routing<'p> {
        let mut d = self.decide(req, ctx, scratch);
        let rule = self.rule(d.rule);
        let steps = rule.map_or_else(Vec::new, |r| plan(r, self.catalog(), req, ctx, &mut d.tokens));
        let unknown_requested = match rule.map(|r| &r.target) {
            Some(TargetIr::Requested { .. }) => steps.iter().find(|s| s.model.is_none()).map(|s| s.name.clone()),
            _ => None,
        };
        Routing {
            index: d.rule,
            rule: rule.map_or("", |r| r.name.as_str()),
            retries: rule.map_or(0, |r| r.options.retries),
            timeout_ms: rule.and_then(|r| r.options.timeout_ms),
            cache: rule.and_then(|r| r.options.cache.as_ref()),
            steps,
            unknown_requested,
            tokens: d.tokens,
        }
    }

    pub(crate) fn eval(&self, c: &CCond, req: &RequestFacts, ctx: &Context<'_>, s: &mut Scratch) -> bool {
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

fn slot_value<'a>(slot: StrSlot, req: &'a RequestFacts, ctx: &Context<'a>) -> Option<&'a str> {
    match slot {
        StrSlot::Tier => ctx.tier,
        StrSlot::Name => ctx.key_name,
        StrSlot::UserId => req.user_id.as_deref(),
        StrSlot::Model => req.model.as_deref(),
        StrSlot::Endpoint => Some(req.endpoint.as_str()),
        StrSlot::Api => Some(req.api.as_str()),
    }
}
