//! Ranges on a single numeric fact, for the constant-folding lints: which values of a fact make a
//! comparison hold, and whether a conjunction of them can hold at all.

use crate::policy::ir::{Cond, Fact, Lit, Operand, Rel};

/// An interval of numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// Lower bound.
    pub lo: f64,
    /// Whether `lo` itself is in.
    pub lo_in: bool,
    /// Upper bound.
    pub hi: f64,
    /// Whether `hi` itself is in.
    pub hi_in: bool,
}

impl Interval {
    /// Every number.
    pub const ALL: Interval = Interval { lo: f64::NEG_INFINITY, lo_in: true, hi: f64::INFINITY, hi_in: true };

    /// The values a fact can take.
    pub fn domain(f: &Fact) -> Interval {
        let (lo, hi) = f.domain();
        Interval { lo, lo_in: true, hi, hi_in: true }
    }

    /// Both at once.
    pub fn intersect(self, o: Interval) -> Interval {
        let (lo, lo_in) = if self.lo > o.lo {
            (self.lo, self.lo_in)
        } else if o.lo > self.lo {
            (o.lo, o.lo_in)
        } else {
            (self.lo, self.lo_in && o.lo_in)
        };
        let (hi, hi_in) = if self.hi < o.hi {
            (self.hi, self.hi_in)
        } else if o.hi < self.hi {
            (o.hi, o.hi_in)
        } else {
            (self.hi, self.hi_in && o.hi_in)
        };
        Interval { lo, lo_in, hi, hi_in }
    }

    /// Holds no value. Counts (tokens, hours) are whole numbers, so `> 3 and < 4` is empty too.
    pub fn is_empty(self, integral: bool) -> bool {
        if self.lo > self.hi || (self.lo == self.hi && !(self.lo_in && self.hi_in)) {
            return true;
        }
        if integral && self.lo.is_finite() && self.hi.is_finite() {
            let first = if self.lo_in { self.lo.ceil() } else { (self.lo + 1.0).floor() };
            let last = if self.hi_in { self.hi.floor() } else { (self.hi - 1.0).ceil() };
            return first > last;
        }
        false
    }

    /// Every value of `self` is in `o`.
    pub fn within(self, o: Interval) -> bool {
        let lo_ok = self.lo > o.lo || (self.lo == o.lo && (o.lo_in || !self.lo_in));
        let hi_ok = self.hi < o.hi || (self.hi == o.hi && (o.hi_in || !self.hi_in));
        lo_ok && hi_ok
    }
}

/// Whether a fact only takes whole values.
pub fn integral(f: &Fact) -> bool {
    matches!(f, Fact::PromptTokens | Fact::PromptChars | Fact::PromptMessages | Fact::RequestMaxTokens | Fact::TimeHour)
}

/// The fact and interval of `fact REL number` (or `number REL fact`), when the atom is one.
pub fn atom(c: &Cond) -> Option<(Fact, Interval)> {
    let Cond::Cmp { lhs, rel, rhs, .. } = c else {
        return None;
    };
    let (fact, n, rel) = match (lhs, rhs) {
        (Operand::Fact(f), Operand::Lit(Lit::Num(n))) => (f, *n, *rel),
        (Operand::Lit(Lit::Num(n)), Operand::Fact(f)) => (f, *n, rel.flip()),
        _ => return None,
    };
    let i = match rel {
        Rel::Eq => Interval { lo: n, lo_in: true, hi: n, hi_in: true },
        Rel::Lt => Interval { hi: n, hi_in: false, ..Interval::ALL },
        Rel::Le => Interval { hi: n, hi_in: true, ..Interval::ALL },
        Rel::Gt => Interval { lo: n, lo_in: false, ..Interval::ALL },
        Rel::Ge => Interval { lo: n, lo_in: true, ..Interval::ALL },
        Rel::Ne => return None,
    };
    Some((fact.clone(), i))
}

/// The intervals that a conjunction puts on each fact (intersected with the fact's domain).
pub fn bounds(conjuncts: &[&Cond]) -> Vec<(Fact, Interval)> {
    let mut out: Vec<(Fact, Interval)> = Vec::new();
    for c in conjuncts {
        if let Some((f, i)) = atom(c) {
            match out.iter_mut().find(|(g, _)| *g == f) {
                Some((_, cur)) => *cur = cur.intersect(i),
                None => {
                    let d = Interval::domain(&f);
                    out.push((f, d.intersect(i)));
                }
            }
        }
    }
    out
}

/// Whether a regex matches every text: one that can match the empty string where a search
/// starts (an empty alternative, `.*`, `x?`) matches at the start of any text, unless an anchor
/// stops it; probing texts of each kind tells the two apart.
pub fn matches_everything(pattern: &str) -> bool {
    let Ok(re) = regex::Regex::new(pattern) else { return false };
    ["", "a", "Z9", " ", "\n", "\u{e9}\u{4e2d}", "x\ny"].iter().all(|t| re.find(t).is_some_and(|m| m.start() == 0))
}

/// The value a condition always has, when constant folding, ranges or sets of values
/// ([`super::values`]) show one.
pub fn constant(c: &Cond) -> Option<bool> {
    if let Some(v) = super::values::constant(c) {
        return Some(v);
    }
    match c {
        Cond::Const(b) => Some(*b),
        Cond::Named(_, c) => constant(c),
        Cond::Not(c) => constant(c).map(|b| !b),
        Cond::Or(cs) => {
            let vals: Vec<Option<bool>> = cs.iter().map(constant).collect();
            if vals.contains(&Some(true)) {
                Some(true)
            } else if vals.iter().all(|v| *v == Some(false)) {
                Some(false)
            } else {
                None
            }
        }
        Cond::And(_) => {
            let cs = c.conjuncts();
            let vals: Vec<Option<bool>> = cs.iter().map(|c| constant(c)).collect();
            if vals.contains(&Some(false)) {
                return Some(false);
            }
            if bounds(&cs).iter().any(|(f, i)| i.is_empty(integral(f))) {
                return Some(false);
            }
            if super::values::bounds(&cs).iter().any(|(f, v)| v.is_empty(f)) {
                return Some(false);
            }
            if vals.iter().all(|v| *v == Some(true)) {
                return Some(true);
            }
            None
        }
        Cond::Regex { pattern, .. } => matches_everything(pattern).then_some(true),
        Cond::Cmp { lhs, rel, rhs, .. } => {
            if let Some((f, i)) = atom(c) {
                let d = Interval::domain(&f);
                if d.intersect(i).is_empty(integral(&f)) {
                    return Some(false);
                }
                if d.within(i) && !f.nullable() {
                    return Some(true);
                }
                return None;
            }
            // Facts with a known set of string values.
            let (f, s) = match (lhs, rhs) {
                (Operand::Fact(f), Operand::Lit(Lit::Str(s))) | (Operand::Lit(Lit::Str(s)), Operand::Fact(f)) => (f, s),
                _ => return None,
            };
            let known: &[&str] = match f {
                Fact::RequestEndpoint => crate::catalog::Endpoint::ALL,
                Fact::RequestApi => crate::catalog::Api::ALL,
                Fact::TimeWeekday => crate::policy::ir::names::WEEKDAYS,
                _ => return None,
            };
            if known.contains(&s.as_str()) {
                None
            } else {
                match rel {
                    Rel::Eq => Some(false),
                    Rel::Ne => Some(true),
                    _ => None,
                }
            }
        }
        _ => None,
    }
}
