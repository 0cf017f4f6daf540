//! W0102: catalog models that no rule can route to.
//!
//! Detects: models named by no target, no pick set and no `tagged`/`healthy` set.
//! Ignores: everything when some rule routes to `requested` (the client may name any model).
//! Cannot see: models that only `requested` reaches.

use crate::policy::check::codes::Code;
use crate::policy::check::ir::Checked;
use crate::policy::diagnostic::Diagnostic;

pub(super) fn run(checked: &Checked, out: &mut Vec<Diagnostic>) {
    let mut used = vec![false; checked.catalog.len()];
    let mut any = false;
    for r in &checked.rules {
        any |= r.target.all_models(&mut |m| {
            if let Some(u) = used.get_mut(m as usize) {
                *u = true;
            }
        });
    }
    if any {
        return;
    }
    let Some(default) = checked.rules.iter().find(|r| r.is_default) else {
        return;
    };
    for (m, u) in checked.catalog.models().iter().zip(used) {
        if !u {
            out.push(
                Diagnostic::new(
                    Code::UnusedModel,
                    default.span,
                    format!("catalog model `{}` is never routed to", m.name),
                )
                .label("no rule, and not the default, can reach it")
                .help("route to it, or remove it from `models:` in yardmaster.yaml"),
            );
        }
    }
}
