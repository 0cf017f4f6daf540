//! W0101: a rule that an earlier rule always catches.
//!
//! Detects: an earlier condition that always holds, and syntactic subsumption: every conjunct of
//! the earlier condition appears in the later one, is implied by the later one's range on the same
//! fact (`prompt.tokens > 100k` catches `prompt.tokens > 200k`), or is an `or` with a term that
//! appears in the later one.
//! Ignores: rules whose own condition never holds (W0105 reports them).
//! Cannot see: subsumption through different facts or through negation.

use crate::policy::check::codes::Code;
use crate::policy::check::ir::{Checked, Cond};
use crate::policy::check::ranges::{atom, bounds, constant};
use crate::policy::diagnostic::Diagnostic;

pub(super) fn run(checked: &Checked, out: &mut Vec<Diagnostic>) {
    for (j, later) in checked.rules.iter().enumerate() {
        if constant(&later.cond) == Some(false) {
            continue;
        }
        for earlier in checked.rules.iter().take(j).filter(|r| !r.is_default) {
            if constant(&earlier.cond) == Some(false) {
                continue;
            }
            let always = constant(&earlier.cond) == Some(true);
            if !always && (later.is_default || !subsumes(&earlier.cond, &later.cond)) {
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

/// Whether every request that satisfies `later` also satisfies `earlier`.
fn subsumes(earlier: &Cond, later: &Cond) -> bool {
    let ce = earlier.conjuncts();
    let cl = later.conjuncts();
    if ce.is_empty() {
        return true;
    }
    let later_bounds = bounds(&cl);
    ce.iter().all(|a| implied(a, &cl, &later_bounds))
}

fn implied(a: &Cond, cl: &[&Cond], later_bounds: &[(crate::policy::check::ir::Fact, crate::policy::check::ranges::Interval)]) -> bool {
    if cl.iter().any(|c| *c == a) {
        return true;
    }
    if let Some((f, i)) = atom(a) {
        return later_bounds.iter().any(|(g, j)| *g == f && j.within(i));
    }
    if let Cond::Or(terms) = a {
        return terms.iter().any(|t| implied(t, cl, later_bounds));
    }
    if let Cond::Named(_, inner) = a {
        return implied(inner, cl, later_bounds);
    }
    false
}
