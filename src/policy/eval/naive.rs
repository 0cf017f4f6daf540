//! The naive evaluator: walks the checked policy rule by rule, searching the prompt once per
//! keyword and running each regex on its own. It is the reference that the compiled program is
//! tested against (a differential property test) and the baseline of the benchmarks.

use std::collections::HashMap;

use regex::Regex;

use super::{simple_fact, Context, RequestFacts};
use crate::policy::ir::value::{
    compare, contains_ascii_ci, keyword_regex, lit_value, needs_regex, starts_with_ascii_ci, V,
};
use crate::policy::ir::{Checked, Cond, Fact, Operand, TextOp};

/// A checked policy with its regexes compiled one by one.
pub struct Naive {
    /// The policy.
    pub checked: Checked,
    regexes: HashMap<String, Regex>,
}

impl Naive {
    /// Compiles every regex of the policy on its own.
    pub fn new(checked: Checked) -> Naive {
        let mut regexes = HashMap::new();
        for r in &checked.rules {
            collect(&r.cond, &mut regexes);
        }
        Naive { checked, regexes }
    }

    /// The index of the first rule whose condition holds (the default when none does).
    pub fn decide(&self, req: &RequestFacts, ctx: &Context<'_>) -> usize {
        let mut st = State { tokens: req.known_tokens, chars: req.known_chars };
        for (i, r) in self.checked.rules.iter().enumerate() {
            if self.eval(&r.cond, req, ctx, &mut st) {
                return i;
            }
        }
        self.checked.rules.len().saturating_sub(1)
    }

    fn eval(&self, c: &Cond, req: &RequestFacts, ctx: &Context<'_>, st: &mut State) -> bool {
        match c {
            Cond::Const(b) => *b,
            Cond::And(cs) => cs.iter().all(|c| self.eval(c, req, ctx, st)),
            Cond::Or(cs) => cs.iter().any(|c| self.eval(c, req, ctx, st)),
            Cond::Not(c) => !self.eval(c, req, ctx, st),
            Cond::Named(_, c) => self.eval(c, req, ctx, st),
            Cond::Truthy { fact, .. } => self.value(fact, req, ctx, st) == V::Bool(true),
            Cond::Cmp { lhs, rel, rhs, .. } => {
                let a = self.operand(lhs, req, ctx, st);
                let b = self.operand(rhs, req, ctx, st);
                compare(a, *rel, b)
            }
            Cond::In { fact, list, negate, .. } => {
                let v = self.value(fact, req, ctx, st);
                let found = v != V::None && list.iter().any(|l| lit_value(l) == v);
                found != *negate
            }
            Cond::Text { fact, op, needles, .. } => {
                let V::Str(text) = self.value(fact, req, ctx, st) else {
                    return false;
                };
                let one = |n: &String| -> bool {
                    if needs_regex(n) {
                        let anchored = *op == TextOp::StartsWith;
                        self.regexes.get(&keyword_regex(n, anchored)).is_some_and(|r| r.is_match(text))
                    } else if *op == TextOp::StartsWith {
                        starts_with_ascii_ci(text, n)
                    } else {
                        contains_ascii_ci(text, n)
                    }
                };
                match op {
                    TextOp::ContainsAll => needles.iter().all(one),
                    _ => needles.iter().any(one),
                }
            }
            Cond::Regex { fact, pattern, .. } => {
                let V::Str(text) = self.value(fact, req, ctx, st) else {
                    return false;
                };
                self.regexes.get(pattern).is_some_and(|r| r.is_match(text))
            }
        }
    }

    fn operand<'a>(&self, o: &'a Operand, req: &'a RequestFacts, ctx: &Context<'a>, st: &mut State) -> V<'a> {
        match o {
            Operand::Lit(l) => lit_value(l),
            Operand::Fact(f) => self.value(f, req, ctx, st),
        }
    }

    fn value<'a>(&self, f: &Fact, req: &'a RequestFacts, ctx: &Context<'a>, st: &mut State) -> V<'a> {
        if *f == Fact::PromptTokens {
            return V::Num(*st.tokens.get_or_insert_with(|| crate::util::tokens::count(&req.prompt)) as f64);
        }
        simple_fact(f, req, ctx, &mut st.chars)
    }
}

struct State {
    tokens: Option<u64>,
    chars: Option<u64>,
}

fn collect(c: &Cond, out: &mut HashMap<String, Regex>) {
    match c {
        Cond::And(cs) | Cond::Or(cs) => cs.iter().for_each(|c| collect(c, out)),
        Cond::Not(c) | Cond::Named(_, c) => collect(c, out),
        Cond::Regex { pattern, .. } => {
            if let Ok(r) = Regex::new(pattern) {
                out.insert(pattern.clone(), r);
            }
        }
        Cond::Text { needles, op, .. } => {
            for n in needles.iter().filter(|n| needs_regex(n)) {
                let p = keyword_regex(n, *op == TextOp::StartsWith);
                if let Ok(r) = Regex::new(&p) {
                    out.insert(p, r);
                }
            }
        }
        _ => {}
    }
}
