//! W0104 / W0105: a rule's condition that always or never holds.
//!
//! Detects: constant folding (`true`, literal comparisons, `none` against a fact that is never
//! `none`), ranges on one numeric fact (`time.hour < 24`, `prompt.tokens > 5k and prompt.tokens
//! < 1k`), and facts with a known set of values (`request.endpoint == "chat2"`).
//! Also: a regex that matches every text (it matches the empty string: `/secret|/`, `/.*/`),
//! reported where it is, even when the rest of the condition narrows it.
//! Ignores: the default (it always holds by design).
//! Cannot see: relations between different facts, or `x or not x` (no SAT solving).

use crate::policy::check::ranges::{constant, matches_everything};
use crate::policy::diagnostic::codes::Code;
use crate::policy::diagnostic::Diagnostic;
use crate::policy::ir::{Checked, Cond};

pub(super) fn run(checked: &Checked, out: &mut Vec<Diagnostic>) {
    for r in checked.rules.iter().filter(|r| !r.is_default) {
        match constant(&r.cond) {
            Some(true) => out.push(
                Diagnostic::new(Code::AlwaysTrue, r.cond_span, format!("the condition of `{}` always holds", r.name))
                    .label("always true")
                    .help("every request stops at this rule: make it the `default`, or narrow the condition"),
            ),
            Some(false) => out.push(
                Diagnostic::new(Code::AlwaysFalse, r.cond_span, format!("the condition of `{}` never holds", r.name))
                    .label("always false")
                    .help("this rule can never route a request: fix the condition or remove the rule"),
            ),
            None => {
                for c in r.cond.conjuncts() {
                    if let Cond::Regex { pattern, label, .. } = c {
                        if matches_everything(pattern) {
                            out.push(
                                Diagnostic::new(
                                    Code::AlwaysTrue,
                                    r.cond_span,
                                    format!("`{label}` in `{}` matches every text", r.name),
                                )
                                .label("this condition always holds")
                                .help("the regex matches the empty string (an empty alternative, `.*` or `?`): remove the empty part"),
                            );
                        }
                    }
                }
            }
        }
    }
}
