//! Checks on each rule's targets against its condition and options.
//!
//! - W0106: a chain that names a model twice (the second try of the same model rarely helps;
//!   use `retries`).
//! - W0107: a target whose context window is smaller than the rule's `prompt.tokens` lower bound.
//! - W0108: a target that lacks a capability the rule requires (`request.tools`, `request.images`
//!   as a conjunct).
//! - W0103: `cheapest` over a model without a price.
//!
//! Ignores: `requested` (the client's choice is checked at request time). Cannot see: bounds
//! that come through `or`.

use crate::catalog::{Capability, Endpoint};
use crate::policy::check::ranges::bounds;
use crate::policy::diagnostic::codes::Code;
use crate::policy::diagnostic::Diagnostic;
use crate::policy::ir::{Checked, Cond, Fact, Lit, Operand, Rel, RuleIr, SetKind, TargetIr};
use crate::policy::syntax::ast::PickKind;

pub(super) fn run(checked: &Checked, catalog: bool, out: &mut Vec<Diagnostic>) {
    for r in &checked.rules {
        repeated(checked, r, out);
        if catalog {
            context(checked, r, out);
            capabilities(checked, r, out);
            unpriced(checked, &r.target, r, out);
        }
    }
}

fn name(checked: &Checked, m: u32) -> String {
    checked.catalog.get(m).map_or_else(|| format!("#{m}"), |m| m.name.clone())
}

fn explicit(r: &RuleIr) -> Vec<u32> {
    let mut v = Vec::new();
    r.target.explicit_models(&mut |m| v.push(m));
    v
}

fn repeated(checked: &Checked, r: &RuleIr, out: &mut Vec<Diagnostic>) {
    let TargetIr::Chain(steps) = &r.target else {
        return;
    };
    let mut seen = Vec::new();
    for s in steps {
        if let TargetIr::Model { model, .. } = s {
            if seen.contains(model) {
                out.push(
                    Diagnostic::new(
                        Code::RepeatedModel,
                        r.target_span,
                        format!("the chain of `{}` tries `{}` twice", r.name, name(checked, *model)),
                    )
                    .label("repeats a model")
                    .help("use `retries N` to try a target again"),
                );
                return;
            }
            seen.push(*model);
        }
    }
}

fn context(checked: &Checked, r: &RuleIr, out: &mut Vec<Diagnostic>) {
    let cs = r.cond.conjuncts();
    let Some((_, i)) = bounds(&cs).into_iter().find(|(f, _)| *f == Fact::PromptTokens) else {
        return;
    };
    if !i.lo.is_finite() || i.lo <= 0.0 {
        return;
    }
    for m in explicit(r) {
        let Some(model) = checked.catalog.get(m) else {
            continue;
        };
        if let Some(ctx) = model.context {
            #[expect(clippy::cast_precision_loss, reason = "context windows are far below 2^52")]
            let small = (ctx as f64) <= i.lo;
            if small {
                out.push(
                    Diagnostic::new(
                        Code::SmallContext,
                        r.target_span,
                        format!(
                            "`{}` has a {}-token context, but this rule takes prompts of more than {} tokens",
                            model.name, ctx, i.lo
                        ),
                    )
                    .label("cannot hold the prompt")
                    .with_secondary(r.cond_span, "the token guard")
                    .help("dispatch will skip it; use a model with a larger context"),
                );
            }
        }
    }
}

fn requires(cs: &[&Cond], fact: &Fact) -> bool {
    cs.iter().any(|c| match c {
        Cond::Truthy { fact: f, .. } => f == fact,
        Cond::Cmp { lhs: Operand::Fact(f), rel: Rel::Eq, rhs: Operand::Lit(Lit::Bool(true)), .. } => f == fact,
        _ => false,
    })
}

fn capabilities(checked: &Checked, r: &RuleIr, out: &mut Vec<Diagnostic>) {
    let cs = r.cond.conjuncts();
    for (fact, cap, word) in
        [(Fact::RequestTools, Capability::Tools, "tools"), (Fact::RequestImages, Capability::Images, "images")]
    {
        if !requires(&cs, &fact) {
            continue;
        }
        for m in explicit(r) {
            let Some(model) = checked.catalog.get(m) else {
                continue;
            };
            if !model.can(cap) {
                out.push(
                    Diagnostic::new(
                        Code::MissingCapability,
                        r.target_span,
                        format!("`{}` does not support {word}, which this rule requires", model.name),
                    )
                    .label(format!("lacks `{word}`"))
                    .with_secondary(r.cond_span, "the requirement")
                    .help(format!(
                        "add `{word}` to its `capabilities` in the catalog, or route to a model that has it"
                    )),
                );
            }
        }
    }
}

fn unpriced(checked: &Checked, t: &TargetIr, r: &RuleIr, out: &mut Vec<Diagnostic>) {
    match t {
        TargetIr::Pick { kind: PickKind::Cheapest, set } => {
            let missing: Vec<String> = set
                .models
                .iter()
                .filter_map(|m| checked.catalog.get(*m))
                .filter(|m| set.kind != SetKind::Healthy || m.endpoint == Endpoint::Chat || m.price.is_none())
                .filter(|m| m.price.is_none())
                .map(|m| format!("`{}`", m.name))
                .collect();
            if !missing.is_empty() {
                out.push(
                    Diagnostic::new(
                        Code::UnpricedModel,
                        r.target_span,
                        format!("`cheapest` cannot order {}: no price", missing.join(", ")),
                    )
                    .label("unpriced models in this set")
                    .help("add `price: { input, output }` to them in the catalog; unpriced models are tried last"),
                );
            }
        }
        TargetIr::Chain(steps) => steps.iter().for_each(|s| unpriced(checked, s, r, out)),
        TargetIr::Split(arms) => arms.iter().for_each(|(_, s)| unpriced(checked, s, r, out)),
        _ => {}
    }
}
