//! Checks on each rule's targets against its condition and options.
//!
//! - W0106: a chain that names a model twice, as two steps or in a pick's list and again as a step
//!   (dispatch skips the second; use `retries`); a split whose arms start with the same model; a
//!   target that the rule's own condition requires to be unhealthy (`not healthy(m)`).
//! - W0107: a target whose context window is smaller than the rule's `prompt.tokens` lower bound.
//! - W0108: a target that lacks a capability the rule requires (`request.tools`, `request.images`
//!   as a conjunct).
//! - W0108 also: a rule that chat requests can reach whose models all serve embeddings only, and
//!   `requested` where the condition pins `request.model` to names outside the catalog (`auto`).
//! - W0103: `cheapest` over a model without a price.
//!
//! Ignores: `requested` (the client's choice is checked at request time). Cannot see: bounds
//! that come through `or`.

use crate::catalog::{Capability, Endpoint};
use crate::policy::check::ranges::bounds;
use crate::policy::check::values;
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
            requested(checked, r, out);
        }
    }
    if catalog {
        endpoints(checked, out);
    }
}

/// The endpoints a rule's condition lets through (both when it does not say).
fn endpoints_of(cond: &Cond) -> (bool, bool) {
    let cs = cond.conjuncts();
    let set = values::bounds(&cs).into_iter().find(|(f, _)| *f == Fact::RequestEndpoint).map(|(_, v)| v);
    let takes = |e: &str| {
        set.as_ref().is_none_or(|v| {
            !v.clone().and(values::Values::In([values::Val::Str(e.into())].into())).is_empty(&Fact::RequestEndpoint)
        })
    };
    (takes("chat"), takes("embeddings"))
}

/// W0108: a rule that chat requests can reach (no earlier rule takes every chat request) whose
/// every model serves embeddings only; chat requests it matches can never be answered.
fn endpoints(checked: &Checked, out: &mut Vec<Diagnostic>) {
    let mut chat_reaches = true;
    for r in &checked.rules {
        let (chat, _) = endpoints_of(&r.cond);
        let mut all = Vec::new();
        let any = r.target.all_models(&mut |m| all.push(m));
        let serves = |e: Endpoint| all.iter().filter_map(|m| checked.catalog.get(*m)).any(|m| m.endpoint == e);
        if chat_reaches && chat && !any && !all.is_empty() && !serves(Endpoint::Chat) {
            out.push(
                Diagnostic::new(
                    Code::MissingCapability,
                    r.target_span,
                    format!(
                        "`{}` can receive chat requests, but every model it routes to serves embeddings only",
                        r.name
                    ),
                )
                .label("no chat model")
                .with_secondary(r.cond_span, "this condition lets chat requests through")
                .help("add `request.endpoint == \"embeddings\"` to the condition, or route to a chat model"),
            );
        }
        // A rule that takes every chat request (its condition is only a chat or endpoint pin, or
        // nothing) leaves none for the rules after it.
        let cs = r.cond.conjuncts();
        if chat && cs.iter().all(|c| values::atom(c).is_some_and(|(f, _)| f == Fact::RequestEndpoint)) {
            chat_reaches = false;
        }
    }
}

/// W0108: `requested` in a rule whose condition pins `request.model` to names that no catalog
/// model has (`request.model == "auto"`): the client's model is never one the gateway can call.
fn requested(checked: &Checked, r: &RuleIr, out: &mut Vec<Diagnostic>) {
    fn has_requested(t: &TargetIr) -> bool {
        match t {
            TargetIr::Requested { .. } => true,
            TargetIr::Chain(steps) => steps.iter().any(has_requested),
            TargetIr::Split(arms) => arms.iter().any(|(_, t)| has_requested(t)),
            _ => false,
        }
    }
    if !has_requested(&r.target) {
        return;
    }
    let cs = r.cond.conjuncts();
    let Some((_, values::Values::In(names))) = values::bounds(&cs).into_iter().find(|(f, _)| *f == Fact::RequestModel)
    else {
        return;
    };
    let in_catalog = |v: &values::Val| matches!(v, values::Val::Str(s) if checked.catalog.by_name(s).is_some());
    if !names.is_empty() && !names.iter().any(in_catalog) {
        let shown: Vec<String> = names
            .iter()
            .map(|v| match v {
                values::Val::Str(s) => format!("`{s}`"),
                values::Val::Bool(b) => format!("`{b}`"),
                values::Val::None => "`none`".into(),
            })
            .collect();
        out.push(
            Diagnostic::new(
                Code::MissingCapability,
                r.target_span,
                format!("`requested` in `{}` is only ever {}, which no catalog model is", r.name, shown.join(" or ")),
            )
            .label("the client's model, never in the catalog here")
            .with_secondary(r.cond_span, "`request.model` is pinned here")
            .help("`requested` routes to the model the client named; for `auto`, name a model or a pick instead"),
        );
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
    let warn = |out: &mut Vec<Diagnostic>, message: String, label: &str, help: &str| {
        out.push(Diagnostic::new(Code::RepeatedModel, r.target_span, message).label(label).help(help));
    };
    // A model the rule's own condition requires to be unhealthy: dispatch skips it every time.
    for c in r.cond.conjuncts() {
        let unhealthy = match c {
            Cond::Not(inner) => match inner.as_ref() {
                Cond::Truthy { fact: Fact::Healthy(m), .. } => Some(*m),
                _ => None,
            },
            Cond::Cmp {
                lhs: Operand::Fact(Fact::Healthy(m)),
                rel: Rel::Eq,
                rhs: Operand::Lit(Lit::Bool(false)),
                ..
            } => Some(*m),
            _ => None,
        };
        if let Some(m) = unhealthy.filter(|m| explicit(r).contains(m)) {
            let m = name(checked, m);
            warn(
                out,
                format!("`{}` routes to `{m}`, which its condition requires to be unhealthy", r.name),
                "never tried",
                "its breaker is open whenever this rule matches, so dispatch skips it: route to another model",
            );
            return;
        }
    }
    match &r.target {
        TargetIr::Chain(steps) => chain(checked, r, steps, out, &warn),
        TargetIr::Split(arms) => split(checked, r, arms, out, &warn),
        _ => {}
    }
}

type Warn<'a> = dyn Fn(&mut Vec<Diagnostic>, String, &str, &str) + 'a;

/// A chain that names a model twice: as two steps, or in a pick's list and again as a step.
fn chain(checked: &Checked, r: &RuleIr, steps: &[TargetIr], out: &mut Vec<Diagnostic>, warn: &Warn<'_>) {
    let mut seen: Vec<u32> = Vec::new();
    for s in steps {
        let models: Vec<u32> = match s {
            TargetIr::Model { model, .. } => vec![*model],
            TargetIr::Pick { set, .. } if set.kind == SetKind::List => set.models.clone(),
            _ => Vec::new(),
        };
        let picked = matches!(s, TargetIr::Pick { .. });
        if let Some(m) = models.iter().find(|m| seen.contains(m)) {
            let how = if picked { " (again in a pick)" } else { "" };
            warn(
                out,
                format!("the chain of `{}` tries `{}` twice{how}", r.name, name(checked, *m)),
                "repeats a model",
                "dispatch skips a model already in the plan; use `retries N` to try a target again",
            );
            return;
        }
        seen.extend(models);
    }
}

/// A split whose arms start with the same model: both shares go to it.
fn split(checked: &Checked, r: &RuleIr, arms: &[(f64, TargetIr)], out: &mut Vec<Diagnostic>, warn: &Warn<'_>) {
    let first = |t: &TargetIr| match t {
        TargetIr::Model { model, .. } => Some(*model),
        TargetIr::Chain(steps) => match steps.first() {
            Some(TargetIr::Model { model, .. }) => Some(*model),
            _ => None,
        },
        _ => None,
    };
    let mut seen: Vec<u32> = Vec::new();
    for (_, arm) in arms {
        if let Some(m) = first(arm) {
            if seen.contains(&m) {
                warn(
                    out,
                    format!("two arms of the split in `{}` start with `{}`", r.name, name(checked, m)),
                    "splits nothing",
                    "each arm should start with a different model; merge the arms' weights",
                );
                return;
            }
            seen.push(m);
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
