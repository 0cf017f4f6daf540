//! Conditions on one fact as sets of values, for the lints: `==`, `!=`, `in`, `not in`, `none`
//! and their negations on a fact compared with strings, booleans or `none` become a set of the
//! values that make the condition hold, so that implication (one set inside another),
//! contradiction (an empty intersection) and exhaustiveness (a union that holds every value) are
//! decided for strings and enums as [`super::ranges`] decides them for numbers.
//!
//! `none` is a value like any other (`tier != "free"` holds for a request with no tier, as the
//! evaluator has it). Facts with a known list of values (`request.endpoint`, `time.weekday`, the
//! booleans) are finite, so `time.weekday in [...all seven...]` holds always; the others have
//! unknown values besides those written.

use std::collections::BTreeSet;

use crate::policy::ir::names::WEEKDAYS;
use crate::policy::ir::{Cond, Fact, Lit, Operand, Rel};

/// One value a fact can have.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Val {
    /// `none`.
    None,
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
}

/// The values that make a condition hold: those listed, or every value but those listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Values {
    /// Exactly these.
    In(BTreeSet<Val>),
    /// Any but these.
    Out(BTreeSet<Val>),
}

fn val(l: &Lit) -> Option<Val> {
    match l {
        Lit::None => Some(Val::None),
        Lit::Bool(b) => Some(Val::Bool(*b)),
        Lit::Str(s) => Some(Val::Str(s.clone())),
        Lit::Num(_) => None,
    }
}

/// Every value of a finite fact, when it has a known list of them.
fn universe(f: &Fact) -> Option<BTreeSet<Val>> {
    let mut out: BTreeSet<Val> = match f {
        Fact::RequestEndpoint => crate::catalog::Endpoint::ALL.iter().map(|s| Val::Str((*s).into())).collect(),
        Fact::RequestApi => crate::catalog::Api::ALL.iter().map(|s| Val::Str((*s).into())).collect(),
        Fact::TimeWeekday => WEEKDAYS.iter().map(|s| Val::Str((*s).into())).collect(),
        Fact::RequestStream | Fact::RequestTools | Fact::RequestImages => [Val::Bool(false), Val::Bool(true)].into(),
        _ => return None,
    };
    if f.nullable() {
        out.insert(Val::None);
    }
    Some(out)
}

impl Values {
    /// The values for which the condition does not hold.
    pub fn complement(self) -> Values {
        match self {
            Values::In(s) => Values::Out(s),
            Values::Out(s) => Values::In(s),
        }
    }

    /// Both hold.
    pub fn and(self, o: Values) -> Values {
        match (self, o) {
            (Values::In(a), Values::In(b)) => Values::In(a.intersection(&b).cloned().collect()),
            (Values::In(a), Values::Out(b)) | (Values::Out(b), Values::In(a)) => {
                Values::In(a.difference(&b).cloned().collect())
            }
            (Values::Out(a), Values::Out(b)) => Values::Out(a.union(&b).cloned().collect()),
        }
    }

    /// One holds.
    pub fn or(self, o: Values) -> Values {
        self.complement().and(o.complement()).complement()
    }

    /// In the fact's own terms: a finite fact's `Out` becomes the `In` of what is left.
    fn close(self, f: &Fact) -> Values {
        match (self, universe(f)) {
            (Values::Out(s), Some(all)) => Values::In(all.difference(&s).cloned().collect()),
            (Values::In(s), Some(all)) => Values::In(s.intersection(&all).cloned().collect()),
            (v, None) => v,
        }
    }

    /// No value of the fact makes it hold.
    pub fn is_empty(&self, f: &Fact) -> bool {
        matches!(self.clone().close(f), Values::In(s) if s.is_empty())
    }

    /// Every value of the fact makes it hold.
    pub fn is_all(&self, f: &Fact) -> bool {
        match (self.clone().close(f), universe(f)) {
            (Values::Out(s), _) => s.is_empty(),
            (Values::In(s), Some(all)) => s == all,
            (Values::In(_), None) => false,
        }
    }

    /// Every value that makes `self` hold makes `o` hold.
    pub fn within(&self, o: &Values, f: &Fact) -> bool {
        self.clone().and(o.clone().complement()).is_empty(f)
    }
}

/// The fact and the values of a condition on one fact compared with strings, booleans or `none`.
pub fn atom(c: &Cond) -> Option<(Fact, Values)> {
    match c {
        Cond::Cmp { lhs, rel: rel @ (Rel::Eq | Rel::Ne), rhs, .. } => {
            let (f, l) = match (lhs, rhs) {
                (Operand::Fact(f), Operand::Lit(l)) | (Operand::Lit(l), Operand::Fact(f)) => (f, l),
                _ => return None,
            };
            let v = Values::In([val(l)?].into());
            Some((f.clone(), if *rel == Rel::Eq { v } else { v.complement() }))
        }
        Cond::In { fact, list, negate, .. } => {
            let set: Option<BTreeSet<Val>> = list.iter().map(val).collect();
            let v = Values::In(set?);
            Some((fact.clone(), if *negate { v.complement() } else { v }))
        }
        Cond::Truthy { fact, .. } => Some((fact.clone(), Values::In([Val::Bool(true)].into()))),
        Cond::Not(inner) => atom(inner).map(|(f, v)| (f, v.complement())),
        Cond::Named(_, inner) => atom(inner),
        // `a or b` on the same fact is one set too.
        Cond::Or(terms) => {
            let mut it = terms.iter().map(atom);
            let (f, mut v) = it.next()??;
            for t in it {
                let (g, w) = t?;
                if g != f {
                    return None;
                }
                v = v.or(w);
            }
            Some((f, v))
        }
        _ => None,
    }
}

/// The values that a conjunction allows each fact (only facts it constrains).
pub fn bounds(conjuncts: &[&Cond]) -> Vec<(Fact, Values)> {
    let mut out: Vec<(Fact, Values)> = Vec::new();
    for c in conjuncts {
        if let Some((f, v)) = atom(c) {
            match out.iter_mut().find(|(g, _)| *g == f) {
                Some((_, cur)) => *cur = cur.clone().and(v),
                None => out.push((f, v)),
            }
        }
    }
    out
}

/// The value a condition on one fact always has, when its set shows one.
pub fn constant(c: &Cond) -> Option<bool> {
    let (f, v) = atom(c)?;
    if v.is_empty(&f) {
        Some(false)
    } else if v.is_all(&f) {
        Some(true)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(f: Fact, rel: Rel, l: Lit) -> Cond {
        Cond::Cmp { lhs: Operand::Fact(f), rel, rhs: Operand::Lit(l), label: String::new() }
    }

    fn s(x: &str) -> Lit {
        Lit::Str(x.into())
    }

    #[test]
    fn sets_decide_implication_contradiction_and_exhaustiveness() {
        let tier = Fact::UserTier;
        // `tier != "a" or tier != "b"` always holds; `tier == "a" and tier == "b"` never does.
        let either = Cond::Or(vec![cmp(tier.clone(), Rel::Ne, s("a")), cmp(tier.clone(), Rel::Ne, s("b"))]);
        assert_eq!(constant(&either), Some(true));
        let both = [cmp(tier.clone(), Rel::Eq, s("a")), cmp(tier.clone(), Rel::Eq, s("b"))];
        let b = bounds(&both.iter().collect::<Vec<_>>());
        assert!(b[0].1.is_empty(&tier));
        // A list catches each of its members; a negation catches everything else.
        let (_, list) =
            atom(&Cond::In { fact: tier.clone(), list: vec![s("a"), s("b")], negate: false, label: String::new() })
                .unwrap();
        let (_, a) = atom(&cmp(tier.clone(), Rel::Eq, s("a"))).unwrap();
        assert!(a.within(&list, &tier) && !list.within(&a, &tier));
        let (_, not_free) = atom(&cmp(tier.clone(), Rel::Ne, s("free"))).unwrap();
        assert!(a.within(&not_free, &tier));
        // `none` is a value: `!= "a"` holds for it, `== none or != none` always.
        let (_, none) = atom(&cmp(tier.clone(), Rel::Eq, Lit::None)).unwrap();
        assert!(none.within(&not_free, &tier));
        assert_eq!(
            constant(&Cond::Or(vec![cmp(tier.clone(), Rel::Eq, Lit::None), cmp(tier.clone(), Rel::Ne, Lit::None)])),
            Some(true)
        );
        // Finite facts: every weekday listed always holds; an endpoint that is not one never.
        let days = WEEKDAYS.iter().map(|d| s(d)).collect();
        assert_eq!(
            constant(&Cond::In { fact: Fact::TimeWeekday, list: days, negate: false, label: String::new() }),
            Some(true)
        );
        assert_eq!(constant(&cmp(Fact::RequestEndpoint, Rel::Eq, s("chat2"))), Some(false));
        assert_eq!(constant(&cmp(tier, Rel::Eq, s("x"))), None);
    }
}
