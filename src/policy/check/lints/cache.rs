//! Lints on a rule's `cache` (SPEC §10).
//!
//! - W0110: `similar` under 80%: texts that far apart are often different questions, so the cache
//!   answers them with another question's answer.
//! - W0111: `cache` on a rule with a `split`: the arm that answered first is replayed to every
//!   later request, which skews the experiment.
//!
//! Cannot see: whether the requests of a rule are repeated enough for the cache to pay.

use crate::policy::diagnostic::codes::Code;
use crate::policy::diagnostic::Diagnostic;
use crate::policy::ir::{Checked, TargetIr};

fn has_split(t: &TargetIr) -> bool {
    match t {
        TargetIr::Split(_) => true,
        TargetIr::Chain(steps) => steps.iter().any(has_split),
        _ => false,
    }
}

pub(super) fn run(checked: &Checked, out: &mut Vec<Diagnostic>) {
    for r in &checked.rules {
        let Some(c) = &r.options.cache else { continue };
        if let Some(s) = c.similar.as_ref().filter(|s| s.threshold < 0.8) {
            out.push(
                Diagnostic::new(
                    Code::LowSimilarity,
                    c.mode_span.unwrap_or(c.span),
                    format!("`{}` answers from the cache at {:.0}% similarity", r.name, s.threshold * 100.0),
                )
                .label("a low threshold")
                .help("under 80%, different questions match each other's answers: use 90% or more"),
            );
        }
        if has_split(&r.target) {
            out.push(
                Diagnostic::new(Code::CacheWithSplit, c.span, format!("`{}` caches the answers of a split", r.name))
                    .label("a cached arm answers for the others")
                    .help("a cached answer is replayed whichever arm a request would take: drop `cache` while the experiment runs"),
            );
        }
    }
}
