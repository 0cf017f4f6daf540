//! Plans: a matched rule's target expanded into the models to try, in order, each taken or
//! skipped with a reason. Dispatch tries the taken steps in order; `explain` prints all of them.

use serde::Serialize;

use super::{split_arm, sticky_key, Context, RequestFacts};
use crate::catalog::{Capability, Catalog, ModelId};
use crate::policy::ir::{PickKind, RuleIr, SetIr, SetKind, TargetIr};

/// One step of a plan.
#[derive(Clone, Debug, Serialize)]
pub struct Step<'p> {
    /// The catalog model (none for `deny`, or a `requested` name outside the catalog).
    #[serde(skip)]
    pub model: Option<ModelId>,
    /// The model's name (or the requested name).
    #[serde(rename = "model")]
    pub name: String,
    /// Whether the step would be tried.
    pub taken: bool,
    /// Why it is taken or skipped.
    pub reason: String,
    /// Overrides applied to the request that leaves.
    #[serde(skip)]
    pub with: &'p [(String, serde_json::Value)],
    /// A refusal: status and message.
    #[serde(skip)]
    pub deny: Option<(u16, &'p str)>,
    /// Why the step is skipped, when it is.
    #[serde(skip)]
    pub skip: Option<Skip>,
}

/// Why a step is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The model is already earlier in the plan.
    Repeated,
    /// The model serves another endpoint.
    Endpoint,
    /// The model is outside the rule's `only` set.
    Outside,
    /// The request offers tools, and the model has none.
    Tools,
    /// The request has images, and the model takes none.
    Images,
    /// The model's context cannot hold the prompt and `max_tokens`.
    Context,
    /// The client named a model that the catalog does not have (`requested`).
    NotInCatalog,
    /// The request names no model (`requested`).
    NoModel,
    /// The model's breaker is open.
    Unhealthy,
}

impl Skip {
    /// Whether the request could be served by trying again later (only a breaker closes by itself).
    pub fn transient(self) -> bool {
        self == Skip::Unhealthy
    }
}

/// Expands a rule's target. `tokens` is the request's token count when already known; it is
/// filled in when a context check needs it (at most one count per request).
pub fn plan<'p>(
    rule: &'p RuleIr,
    catalog: &Catalog,
    req: &RequestFacts,
    ctx: &Context<'_>,
    tokens: &mut Option<u64>,
) -> Vec<Step<'p>> {
    let mut p = Planner { rule, catalog, req, ctx, tokens, out: Vec::new(), taken: 0 };
    p.target(&rule.target, &[]);
    p.out
}

struct Planner<'p, 'a, 'c> {
    rule: &'p RuleIr,
    catalog: &'a Catalog,
    req: &'a RequestFacts,
    ctx: &'a Context<'c>,
    tokens: &'a mut Option<u64>,
    out: Vec<Step<'p>>,
    taken: usize,
}

const NO_WITH: &[(String, serde_json::Value)] = &[];

impl<'p> Planner<'p, '_, '_> {
    fn done(&self) -> bool {
        self.out.last().is_some_and(|s| s.deny.is_some())
    }

    fn target(&mut self, t: &'p TargetIr, with: &'p [(String, serde_json::Value)]) {
        if self.done() {
            return;
        }
        match t {
            TargetIr::Model { model, with } => self.model(*model, with, None),
            TargetIr::Requested { with } => match self.req.model.as_deref().map(|n| (n, self.catalog.id(n))) {
                Some((_, Some(m))) => self.model(m, with, Some("requested")),
                Some((n, None)) => self.out.push(Step {
                    model: None,
                    name: n.to_string(),
                    taken: false,
                    // A family's name is dispatched by the gateway as a target of its own.
                    reason: match self.catalog.family_of(n) {
                        Some(f) => format!("requested: of a family, sent to `{}` as `{}`", f.provider, f.upstream_id),
                        None => "skipped: requested model is not in the catalog".into(),
                    },
                    with: NO_WITH,
                    deny: None,
                    skip: Some(Skip::NotInCatalog),
                }),
                None => self.out.push(Step {
                    model: None,
                    name: String::new(),
                    taken: false,
                    reason: "skipped: the request names no model".into(),
                    with: NO_WITH,
                    deny: None,
                    skip: Some(Skip::NoModel),
                }),
            },
            TargetIr::Pick { kind, set } => {
                for m in self.order(*kind, set) {
                    self.model(m, with, Some(kind.as_str()));
                }
            }
            TargetIr::Split(arms) => {
                let chosen = split_arm(arms.iter().map(|(w, _)| *w), sticky_key(self.req, self.ctx), &self.rule.name);
                let mut order: Vec<usize> = (0..arms.len()).collect();
                order.sort_by(|a, b| {
                    let wa = arms.get(*a).map_or(0.0, |x| x.0);
                    let wb = arms.get(*b).map_or(0.0, |x| x.0);
                    (*b == chosen).cmp(&(*a == chosen)).then(wb.total_cmp(&wa))
                });
                for i in order {
                    if let Some((_, t)) = arms.get(i) {
                        self.target(t, with);
                    }
                }
            }
            TargetIr::Chain(steps) => steps.iter().for_each(|s| self.target(s, with)),
            TargetIr::Deny { status, message } => self.out.push(Step {
                model: None,
                name: String::new(),
                taken: true,
                reason: format!("deny {status}"),
                with: NO_WITH,
                deny: Some((*status, message)),
                skip: None,
            }),
        }
    }

    /// The candidates of a pick, in the order they would be tried.
    fn order(&self, kind: PickKind, set: &SetIr) -> Vec<ModelId> {
        let mut ms: Vec<ModelId> = set
            .models
            .iter()
            .copied()
            .filter(|m| {
                set.kind == SetKind::List || self.catalog.get(*m).is_some_and(|x| x.endpoint == self.req.endpoint)
            })
            .collect();
        match kind {
            PickKind::Cheapest => ms.sort_by(|a, b| {
                let p = |m: &ModelId| {
                    self.catalog.get(*m).and_then(|x| x.price).map_or(f64::INFINITY, |p| p.input + p.output)
                };
                p(a).total_cmp(&p(b))
            }),
            PickKind::Fastest => ms.sort_by(|a, b| {
                let l = |m: &ModelId| self.ctx.health.latency_ms(*m).unwrap_or(f64::INFINITY);
                l(a).total_cmp(&l(b))
            }),
        }
        ms
    }

    fn model(&mut self, m: ModelId, with: &'p [(String, serde_json::Value)], how: Option<&str>) {
        let Some(model) = self.catalog.get(m) else {
            return;
        };
        let skip = self.skip_reason(m, with);
        let taken = skip.is_none();
        let reason = match &skip {
            Some((_, r)) => format!("skipped: {r}"),
            None => {
                self.taken += 1;
                let pos =
                    if self.taken == 1 { "first choice".to_string() } else { format!("fallback {}", self.taken - 1) };
                match how {
                    Some(h) => format!("{pos} ({h})"),
                    None => pos,
                }
            }
        };
        let skip = skip.map(|(k, _)| k);
        self.out.push(Step { model: Some(m), name: model.name.clone(), taken, reason, with, deny: None, skip });
    }

    /// Why a model cannot take the request, if it cannot: what no retry changes first (the
    /// endpoint, `only`, capabilities, the context), then its health.
    fn skip_reason(&mut self, m: ModelId, with: &[(String, serde_json::Value)]) -> Option<(Skip, String)> {
        let model = self.catalog.get(m)?;
        if self.out.iter().any(|s| s.model == Some(m) && s.taken) {
            return Some((Skip::Repeated, "already in the plan".into()));
        }
        if model.endpoint != self.req.endpoint {
            let why = format!("serves {}, not {}", model.endpoint.as_str(), self.req.endpoint.as_str());
            return Some((Skip::Endpoint, why));
        }
        if let Some(only) = &self.rule.options.only {
            if !only.models.contains(&m) {
                return Some((Skip::Outside, "outside the rule's `only` set".into()));
            }
        }
        if self.req.tools && !model.can(Capability::Tools) {
            return Some((Skip::Tools, "does not support tools".into()));
        }
        if self.req.images && !model.can(Capability::Images) {
            return Some((Skip::Images, "does not support images".into()));
        }
        if let Some(ctx) = model.context {
            let out = max_tokens(self.req.max_tokens, with).unwrap_or(0);
            let bytes = (self.req.prompt.len() as u64).max(self.req.known_tokens.unwrap_or(0));
            if bytes.saturating_add(out) > ctx {
                let tokens = *self.tokens.get_or_insert_with(|| {
                    self.req.known_tokens.unwrap_or_else(|| crate::util::tokens::count(&self.req.prompt))
                });
                if tokens.saturating_add(out) > ctx {
                    return Some((Skip::Context, format!("context of {ctx} tokens cannot hold {tokens} + {out}")));
                }
            }
        }
        if !self.ctx.health.healthy(m) {
            return Some((Skip::Unhealthy, "unhealthy (breaker open)".into()));
        }
        None
    }
}

/// The `max_tokens` of the request that leaves for a target: the client's, capped by a
/// `with (max_tokens: N)` (or `max_completion_tokens`) override, or the override alone.
pub fn max_tokens(client: Option<u64>, with: &[(String, serde_json::Value)]) -> Option<u64> {
    let cap =
        with.iter().find(|(k, _)| k == "max_tokens" || k == "max_completion_tokens").and_then(|(_, v)| v.as_u64());
    match (client, cap) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
