//! W0101: a rule that an earlier rule always catches.
//!
//! Detects: an earlier condition that always holds, and subsumption: every conjunct of the
//! earlier condition appears in the later one, is implied by the later one's range on the same
//! fact (`prompt.tokens > 100k` catches `prompt.tokens > 200k`) or by its set of values on the
//! same fact (`user.tier in ["a", "b"]` catches `user.tier == "a"`, `user.tier != "free"` catches
//! `user.tier == "pro"`), or is an `or` with a term that appears in the later one.
//! Ignores: rules whose own condition never holds (W0105 reports them).
//! Cannot see: subsumption through different facts (`prompt.tokens` against `prompt.chars`), or
//! through text operators (`contains "a"` does not catch `contains "ab"`).
//!
//! Cost: candidate pairs come from an index on one "pivot" conjunct per rule, so a policy of
//! thousands of unrelated rules is not compared pair by pair.

use std::collections::{HashMap, HashSet};

use crate::policy::check::ranges::{atom, bounds, constant, Interval};
use crate::policy::check::values::{self, Values};
use crate::policy::diagnostic::codes::Code;
use crate::policy::diagnostic::Diagnostic;
use crate::policy::ir::{Checked, Cond, Fact};

struct Shape<'a> {
    conjuncts: Vec<&'a Cond>,
    keys: HashSet<String>,
    bounds: Vec<(Fact, Interval)>,
    values: Vec<(Fact, Values)>,
    constant: Option<bool>,
}

fn key(c: &Cond) -> String {
    format!("{c:?}")
}

fn range_key(f: &Fact) -> String {
    format!("range {f:?}")
}

fn values_key(f: &Fact) -> String {
    format!("values {f:?}")
}

pub(super) fn run(checked: &Checked, out: &mut Vec<Diagnostic>) {
    let shapes: Vec<Shape> = checked
        .rules
        .iter()
        .map(|r| {
            let conjuncts = r.cond.conjuncts();
            Shape {
                keys: conjuncts.iter().map(|c| key(c)).collect(),
                bounds: bounds(&conjuncts),
                values: values::bounds(&conjuncts),
                constant: constant(&r.cond),
                conjuncts,
            }
        })
        .collect();
    // Pivot index: an earlier rule can only catch a later one that has its pivot.
    let mut index: HashMap<String, Vec<usize>> = HashMap::new();
    let mut everywhere: Vec<usize> = Vec::new();
    for (i, (r, s)) in checked.rules.iter().zip(&shapes).enumerate() {
        if r.is_default || s.constant == Some(false) {
            continue;
        }
        if s.constant == Some(true) {
            everywhere.push(i);
            continue;
        }
        let pivot = s
            .conjuncts
            .iter()
            .find(|c| atom(c).is_none() && values::atom(c).is_none() && !matches!(c, Cond::Or(_) | Cond::Named(..)))
            .map(|c| key(c))
            .or_else(|| s.conjuncts.iter().find_map(|c| atom(c)).map(|(f, _)| range_key(&f)))
            .or_else(|| s.conjuncts.iter().find_map(|c| values::atom(c)).map(|(f, _)| values_key(&f)));
        match pivot {
            Some(p) => index.entry(p).or_default().push(i),
            None => everywhere.push(i),
        }
    }
    for (j, later) in checked.rules.iter().enumerate() {
        let sj = &shapes[j];
        if sj.constant == Some(false) {
            continue;
        }
        let mut candidates: Vec<usize> = everywhere.iter().copied().filter(|i| *i < j).collect();
        if !later.is_default {
            let ranges = sj.bounds.iter().map(|(f, _)| range_key(f));
            for k in sj.keys.iter().cloned().chain(ranges).chain(sj.values.iter().map(|(f, _)| values_key(f))) {
                if let Some(list) = index.get(&k) {
                    candidates.extend(list.iter().copied().filter(|i| *i < j));
                }
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        for i in candidates {
            let (earlier, si) = (&checked.rules[i], &shapes[i]);
            let always = si.constant == Some(true);
            if !always && (later.is_default || !subsumes(si, sj)) {
                continue;
            }
            let what = if later.is_default { "the default".to_string() } else { format!("rule `{}`", later.name) };
            out.push(
                Diagnostic::new(Code::UnreachableRule, later.span, format!("{what} is never reached"))
                    .label("unreachable")
                    .with_secondary(earlier.span, "this earlier rule catches every request it would match")
                    .help(if always {
                        format!("`{}` always matches; narrow it or move it last", earlier.name)
                    } else {
                        format!("move it above `{}`, or remove it", earlier.name)
                    }),
            );
            break;
        }
    }
}

/// Whether every request that satisfies the later rule also satisfies the earlier one.
fn subsumes(earlier: &Shape, later: &Shape) -> bool {
    !earlier.conjuncts.is_empty() && earlier.conjuncts.iter().all(|a| implied(a, later))
}

fn implied(a: &Cond, later: &Shape) -> bool {
    if later.keys.contains(&key(a)) {
        return true;
    }
    if let Some((f, i)) = atom(a) {
        return later.bounds.iter().any(|(g, j)| *g == f && j.within(i));
    }
    if let Some((f, v)) = values::atom(a) {
        if later.values.iter().any(|(g, w)| *g == f && w.within(&v, &f)) {
            return true;
        }
    }
    match a {
        Cond::Or(terms) => terms.iter().any(|t| implied(t, later)),
        Cond::Named(_, inner) => implied(inner, later),
        _ => false,
    }
}
