//! Step three: [`Checked`] -> [`Program`], the decision program. Every ASCII keyword of every rule
//! goes into one Aho-Corasick automaton, scanned once over the prompt (overlapping, so that
//! keywords inside other keywords are found); hits inside `prompt.last` and `prompt.system` are
//! told apart by position. Regexes (and keywords with non-ASCII letters) go into one `RegexSet` per
//! prompt text. Rules whose truth follows from one lookup are indexed ([`index`]). The program's
//! runtime (deciding, the plan, `explain`) is in `policy::eval`; this module only builds it.

pub(crate) mod index;
pub(crate) mod tree;

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::Regex;
use regex_automata::meta::{self, Regex as MetaRegex};
use regex_automata::MatchKind as SetMatchKind;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::policy::ir::value::{keyword_regex, needs_regex};
use crate::policy::ir::{Checked, Cond, Fact, Operand, RuleIr, TextOp};
pub(crate) use index::Index;
use tree::{CCond, COperand, Fast, Src};

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
    /// Some rule reads `budget.*` (so the gateway reads the key's standing before routing).
    pub reads_budget: bool,
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
    pub(crate) conds: Vec<CCond>,
    /// The same conditions in the compact form the decision loop walks.
    pub(crate) fast: Vec<Fast>,
    pub(crate) index: Index,
    pub(crate) ac: Option<AhoCorasick>,
    pub(crate) ac_len: usize,
    /// One regex set per prompt text (regex-automata's meta regex, so that matching can write
    /// into a reusable `PatternSet` instead of allocating one per search).
    pub(crate) sets: [Option<MetaRegex>; 3],
    /// The automaton's patterns (lowercased), for inspection.
    keywords: Box<[String]>,
    /// The regex sets' patterns per prompt text, for inspection.
    regexes: [Vec<String>; 3],
    /// Facts about the program.
    pub info: ProgramInfo,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("version", &self.checked.version)
            .field("conds", &self.conds)
            .field("keywords", &self.keywords)
            .field("regexes", &self.regexes)
            .field("index", &self.index)
            .field("info", &self.info)
            .finish()
    }
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
        reads_budget: checked.rules.iter().any(|r| {
            r.cond.reads_any(&|f| {
                matches!(
                    f,
                    Fact::BudgetRemainingFraction
                        | Fact::BudgetRemainingUsd
                        | Fact::BudgetSpentFraction
                        | Fact::BudgetSpentUsd
                )
            })
        }),
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
    Program {
        ac_len: b.keywords.len(),
        checked,
        conds,
        fast,
        index,
        ac,
        sets,
        keywords: b.keywords.into(),
        regexes: b.regexes,
        info,
    }
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
