//! W0102: catalog models that no rule can route to.
//!
//! Detects: models named by no target, no pick set and no `tagged`/`healthy` set.
//! Ignores: everything when some rule routes to `requested` (the client may name any model).
//! Cannot see: models that only `requested` reaches.

use crate::policy::diagnostic::codes::Code;
use crate::policy::diagnostic::Diagnostic;
use crate::policy::ir::Checked;

pub(super) fn run(checked: &Checked, out: &mut Vec<Diagnostic>) {
    let mut used = vec![false; checked.catalog.len()];
    let mut any = false;
    for r in &checked.rules {
        any |= r.target.all_models(&mut |m| {
            if let Some(u) = used.get_mut(m as usize) {
                *u = true;
            }
        });
        // A semantic cache's embeddings model is called for the rule's requests.
        if let Some(s) = r.options.cache.as_ref().and_then(|c| c.similar.as_ref()) {
            if let Some(u) = used.get_mut(s.model as usize) {
                *u = true;
            }
        }
    }
    if any {
        return;
    }
    let Some(default) = checked.rules.iter().find(|r| r.is_default) else {
        return;
    };
    let unused: Vec<String> =
        checked.catalog.models().iter().zip(used).filter(|(_, u)| !u).map(|(m, _)| format!("`{}`", m.name)).collect();
    if unused.is_empty() {
        return;
    }
    let (noun, verb) = if unused.len() == 1 { ("model", "is") } else { ("models", "are") };
    out.push(
        Diagnostic::new(
            Code::UnusedModel,
            default.span,
            format!("catalog {noun} {} {verb} never routed to", unused.join(", ")),
        )
        .label("no rule, and not the default, can reach them")
        .help("route to them (`cheapest(healthy)` reaches every healthy model), or remove them from `models:`"),
    );
}
