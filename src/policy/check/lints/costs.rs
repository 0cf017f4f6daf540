//! A0101 (`lint --costs`): the worst-case cost of one request through each rule.
//!
//! For every model a rule may try, the worst case is its input price times the largest prompt it
//! can take (the rule's `prompt.tokens` upper bound, else the model's context) plus its output
//! price times the output cap (`with (max_tokens: N)`, else `request.max_tokens`'s upper bound,
//! else `min(4096, context)`). The rule's figure is the largest over its models.
//! Ignores: models without a price or a context (reported as such).

use crate::catalog::Endpoint;
use crate::policy::check::ranges::bounds;
use crate::policy::diagnostic::codes::Code;
use crate::policy::diagnostic::Diagnostic;
use crate::policy::ir::{Checked, Fact, RuleIr, TargetIr};

pub(super) fn run(checked: &Checked, out: &mut Vec<Diagnostic>) {
    for r in &checked.rules {
        let cs = r.cond.conjuncts();
        let b = bounds(&cs);
        let upper = |f: Fact| b.iter().find(|(g, _)| *g == f).map(|(_, i)| i.hi).filter(|h| h.is_finite());
        let (prompt_cap, out_cap) = (upper(Fact::PromptTokens), upper(Fact::RequestMaxTokens));
        let mut worst: Option<(f64, String)> = None;
        let mut unpriced = Vec::new();
        visit(&r.target, None, &mut |m, cap| {
            let Some(model) = checked.catalog.get(m) else {
                return;
            };
            let (Some(price), Some(ctx)) = (model.price, model.context) else {
                unpriced.push(model.name.clone());
                return;
            };
            #[expect(clippy::cast_precision_loss, reason = "context windows are far below 2^52")]
            let ctx = ctx as f64;
            let output =
                if model.endpoint == Endpoint::Embeddings { 0.0 } else { cap.or(out_cap).unwrap_or(4096f64.min(ctx)) };
            let input = prompt_cap.unwrap_or(ctx).min(ctx);
            let usd = (input * price.input + output * price.output) / 1e6;
            if worst.as_ref().is_none_or(|(w, _)| usd > *w) {
                worst = Some((usd, format!("`{}`: {input} input + {output} output tokens", model.name)));
            }
        });
        let msg = match worst {
            Some((usd, why)) => format!("`{}` costs at most ${usd:.4} per request ({why})", r.name),
            None if !unpriced.is_empty() => {
                format!("`{}` has no worst case: its models have no price or context", r.name)
            }
            None => continue,
        };
        let mut d = Diagnostic::new(Code::WorstCaseCost, r.span, msg).label("worst case");
        if !unpriced.is_empty() {
            d = d.help(format!("unpriced or without a context: {}", unpriced.join(", ")));
        }
        note(r, &mut d);
        out.push(d);
    }
}

fn note(r: &RuleIr, d: &mut Diagnostic) {
    if matches!(r.target, TargetIr::Requested { .. }) {
        d.help = Some("`requested` may name any catalog model".into());
    }
}

fn visit(t: &TargetIr, cap: Option<f64>, f: &mut impl FnMut(u32, Option<f64>)) {
    match t {
        TargetIr::Model { model, with } => {
            let cap = with
                .iter()
                .find(|(k, _)| k == "max_tokens" || k == "max_completion_tokens")
                .and_then(|(_, v)| v.as_f64())
                .or(cap);
            f(*model, cap);
        }
        TargetIr::Pick { set, .. } => set.models.iter().for_each(|m| f(*m, cap)),
        TargetIr::Split(arms) => arms.iter().for_each(|(_, t)| visit(t, cap, f)),
        TargetIr::Chain(steps) => steps.iter().for_each(|t| visit(t, cap, f)),
        TargetIr::Requested { .. } | TargetIr::Deny { .. } => {}
    }
}
