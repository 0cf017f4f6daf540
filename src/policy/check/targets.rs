//! Targets: a `then` target -> a [`TargetIr`]: models resolved against the catalog (E0201), sets
//! and picks checked (E0407 a set with no model for the endpoint), split weights (E0401), `with`
//! overrides against the request's fields (E0205, E0304).

use super::Checker;
use crate::catalog::{Endpoint, ModelId};
use crate::policy::diagnostic::codes::Code;
use crate::policy::diagnostic::Diagnostic;
use crate::policy::ir::names::{self, FieldType};
use crate::policy::ir::*;
use crate::policy::syntax::ast::{self, Expr, Target, Value};
use crate::policy::syntax::span::{Span, Spanned};
use crate::util::fuzzy::did_you_mean;

impl Checker {
    pub(super) fn model_arg(&mut self, v: &Spanned<Value>) -> Option<crate::catalog::ModelId> {
        let name = match &v.node {
            Value::Name(n) | Value::Str(n) => n.clone(),
            _ => {
                self.push(Diagnostic::new(Code::BadArguments, v.span, "expected a model name").label("not a model"));
                return None;
            }
        };
        self.model(&name, v.span)
    }

    pub(super) fn model(&mut self, name: &str, span: Span) -> Option<crate::catalog::ModelId> {
        if let Some(id) = self.catalog.id(name) {
            return Some(id);
        }
        let help = did_you_mean(name, self.catalog.models().iter().map(|m| m.name.as_str()))
            .map(|h| format!("did you mean `{h}`?"))
            .unwrap_or_else(|| "models are defined under `models:` in yardmaster.yaml".to_string());
        self.push(
            Diagnostic::new(Code::UnknownModel, span, format!("unknown model `{name}`"))
                .label("not in the catalog")
                .help(help),
        );
        None
    }

    pub(super) fn target(&mut self, t: &Spanned<Target>) -> Option<TargetIr> {
        match &t.node {
            Target::Chain(steps) => {
                let mut out = Vec::new();
                let mut ok = true;
                for s in steps {
                    match self.target(s) {
                        Some(TargetIr::Chain(inner)) => out.extend(inner),
                        Some(x) => out.push(x),
                        None => ok = false,
                    }
                }
                if let Some(pos) = steps.iter().position(|s| matches!(s.node, Target::Deny { .. })) {
                    if pos + 1 < steps.len() {
                        if let Some(s) = steps.get(pos) {
                            self.push(
                                Diagnostic::new(Code::BadValue, s.span, "nothing after a `deny` can be tried")
                                    .label("this refusal ends the chain")
                                    .help("put `deny` last in a chain"),
                            );
                        }
                        ok = false;
                    }
                }
                ok.then_some(TargetIr::Chain(out))
            }
            Target::Model { name, with, .. } => {
                if !self.open && matches!(name.node.as_str(), "healthy" | "requested") {
                    self.push(
                        Diagnostic::new(Code::UnknownModel, name.span, format!("`{}` is not a model", name.node))
                            .label("a set, not a model")
                            .help("pick from a set: `cheapest(healthy)` or `fastest(healthy)`"),
                    );
                    return None;
                }
                let model = self.model(&name.node, name.span);
                let context = model.and_then(|m| self.catalog.get(m)).filter(|_| !self.open).and_then(|m| m.context);
                let with = self.overrides(with, context.map(|c| (name.node.as_str(), c)));
                Some(TargetIr::Model { model: model?, with: with? })
            }
            Target::Requested { with } => Some(TargetIr::Requested { with: self.overrides(with, None)? }),
            Target::Pick { kind, set } => {
                let set = self.set(set)?;
                // Without a catalog, `healthy` and tags are unknown: such a set is not known to be empty.
                if set.models.is_empty() && !(self.open && set.kind != SetKind::List) {
                    self.push(
                        Diagnostic::new(Code::EmptySet, t.span, format!("`{}` picks from an empty set", kind.as_str()))
                            .label("no model is in this set")
                            .help("check the tags in the catalog"),
                    );
                    return None;
                }
                Some(TargetIr::Pick { kind: *kind, set })
            }
            Target::Split(arms) => self.split(arms, t.span),
            Target::Deny { status, message } => {
                let code = status.as_ref().map_or(403, |s| s.node);
                if !(400..=599).contains(&code) {
                    let sp = status.as_ref().map_or(t.span, |s| s.span);
                    self.push(
                        Diagnostic::new(Code::BadValue, sp, format!("`{code}` is not an error status"))
                            .label("expected 400 to 599")
                            .help("`deny` answers with an error: 403 by default, or a status from 400 to 599"),
                    );
                    return None;
                }
                Some(TargetIr::Deny { status: code, message: message.clone() })
            }
        }
    }

    /// A split: every arm's weight above 0% and the weights adding up to 100% (E0401).
    fn split(&mut self, arms: &[ast::SplitArm], span: Span) -> Option<TargetIr> {
        let mut out = Vec::new();
        let mut ok = true;
        let mut total = 0.0;
        for a in arms {
            let (w, raw) = &a.weight.node;
            total += w;
            if *w <= 0.0 {
                self.push(
                    Diagnostic::new(
                        Code::SplitWeights,
                        a.weight.span,
                        format!("a split arm needs a weight above 0%, not `{raw}`"),
                    )
                    .label("this weight"),
                );
                ok = false;
            }
            match self.target(&a.target) {
                Some(x) => out.push((*w, x)),
                None => ok = false,
            }
        }
        if (total - 1.0).abs() > 1e-9 {
            let shown = (total * 1e6).round() / 1e4;
            self.push(
                Diagnostic::new(Code::SplitWeights, span, format!("split weights add up to {shown}%, not 100%"))
                    .label("these weights")
                    .help("make the weights add up to exactly 100%"),
            );
            ok = false;
        }
        ok.then_some(TargetIr::Split(out))
    }

    pub(super) fn set(&mut self, values: &[Spanned<Value>]) -> Option<SetIr> {
        let mut models = Vec::new();
        let mut kind = SetKind::List;
        let mut ok = true;
        let single = values.len() == 1;
        for v in values {
            match &v.node {
                Value::Name(n) if n == "healthy" => {
                    if !single {
                        self.push(
                            Diagnostic::new(Code::BadArguments, v.span, "`healthy` stands alone in a set")
                                .label("mixed with other models")
                                .help("write `cheapest(healthy)`"),
                        );
                        ok = false;
                    }
                    kind = SetKind::Healthy;
                    models.extend(self.catalog.ids());
                }
                Value::Call(f, args) if f.node == "tagged" => match self.tagged(args, v.span) {
                    Some((tag, ids)) => {
                        if single {
                            kind = SetKind::Tagged(tag);
                        }
                        models.extend(ids);
                    }
                    None => ok = false,
                },
                Value::Name(n) if self.lets.contains_key(n) => match self.let_models(n, v.span) {
                    Some(ids) => models.extend(ids),
                    None => ok = false,
                },
                Value::List(items) => {
                    for i in items {
                        match self.model_arg(i) {
                            Some(m) => models.push(m),
                            None => ok = false,
                        }
                    }
                }
                _ => match self.model_arg(v) {
                    Some(m) => models.push(m),
                    None => ok = false,
                },
            }
        }
        ok.then_some(SetIr { kind, models })
    }

    /// `tagged("tag")`: the tag and the catalog's models that carry it (E0303 for anything but one
    /// string, E0407 when no model has the tag).
    fn tagged(&mut self, args: &[Spanned<Value>], span: Span) -> Option<(String, Vec<ModelId>)> {
        let [Spanned { node: Value::Str(tag), .. }] = args else {
            self.push(
                Diagnostic::new(Code::BadArguments, span, "`tagged` takes one tag as a string")
                    .label("here")
                    .help("usage: tagged(\"eu\")"),
            );
            return None;
        };
        let ids: Vec<_> =
            self.catalog.ids().filter(|i| self.catalog.get(*i).is_some_and(|m| m.tags.contains(tag))).collect();
        if ids.is_empty() && !self.open {
            let tags: std::collections::BTreeSet<&str> =
                self.catalog.models().iter().flat_map(|m| m.tags.iter().map(String::as_str)).collect();
            self.push(
                Diagnostic::new(Code::EmptySet, span, format!("no model is tagged `{tag}`"))
                    .label("empty set")
                    .maybe_help(did_you_mean(tag, tags.iter().copied()).map(|h| format!("did you mean `{h}`?"))),
            );
            return None;
        }
        Some((tag.clone(), ids))
    }

    /// A `let` name used as a set: its list's models (E0301 when it is not a list).
    fn let_models(&mut self, n: &str, span: Span) -> Option<Vec<ModelId>> {
        if let Some(l) = self.lets.get_mut(n) {
            l.used = true;
        }
        let value = self.lets.get(n).map(|l| l.value.clone());
        let Some(Expr::Value(Spanned { node: Value::List(items), .. })) = value.map(|v| v.node) else {
            self.push(
                Diagnostic::new(Code::TypeMismatch, span, format!("`{n}` is not a list of models"))
                    .label("used as a set"),
            );
            return None;
        };
        let mut ok = true;
        let mut models = Vec::new();
        for i in &items {
            match self.model_arg(i) {
                Some(m) => models.push(m),
                None => ok = false,
            }
        }
        ok.then_some(models)
    }

    /// `with (...)` fields: known names, values of their type and within their domain
    /// (`temperature` 0 to 2, `top_p` 0 to 1, `max_tokens` at least 1 and, for a model target,
    /// `context` = (model, its window), within the window, `reasoning_effort` from its list).
    pub(super) fn overrides(&mut self, fields: &[ast::WithField], context: Option<(&str, u64)>) -> Option<Overrides> {
        let mut out = Vec::new();
        let mut ok = true;
        for f in fields {
            let name = f.name.node.as_str();
            let Some((_, ty)) = names::FIELDS.iter().find(|(n, _)| *n == name) else {
                let help =
                    did_you_mean(name, names::FIELDS.iter().map(|(n, _)| *n)).map(|h| format!("did you mean `{h}`?"));
                self.push(
                    Diagnostic::new(Code::UnknownField, f.name.span, format!("unknown request field `{name}`"))
                        .label("not a chat request field")
                        .help(help.unwrap_or_else(|| {
                            "`with` sets OpenAI chat request fields such as `max_tokens` or `temperature`".into()
                        })),
                );
                ok = false;
                continue;
            };
            let v = &f.value.node;
            let json = match (ty, v) {
                (FieldType::Count, Value::Num(n, _)) if *n >= 0.0 && n.fract() == 0.0 => {
                    serde_json::json!(*n as u64)
                }
                (FieldType::Number, Value::Num(n, _)) => serde_json::json!(n),
                (FieldType::Str, Value::Str(s)) => serde_json::json!(s),
                (FieldType::StrOrList, Value::Str(s)) => serde_json::json!(s),
                (FieldType::StrOrList, Value::List(items)) if items.iter().all(|i| matches!(i.node, Value::Str(_))) => {
                    serde_json::Value::Array(
                        items
                            .iter()
                            .filter_map(|i| if let Value::Str(s) = &i.node { Some(serde_json::json!(s)) } else { None })
                            .collect(),
                    )
                }
                (FieldType::Bool, Value::Bool(b)) => serde_json::json!(b),
                (FieldType::ResponseFormat, Value::Str(s)) if s == "text" || s == "json_object" => {
                    serde_json::json!({ "type": s })
                }
                _ => {
                    let want = match ty {
                        FieldType::Count => "a whole number",
                        FieldType::Number => "a number",
                        FieldType::Str => "a string",
                        FieldType::StrOrList => "a string or a list of strings",
                        FieldType::Bool => "`true` or `false`",
                        FieldType::ResponseFormat => "\"text\" or \"json_object\"",
                    };
                    self.push(
                        Diagnostic::new(Code::BadValue, f.value.span, format!("`{name}` takes {want}"))
                            .label(format!("expected {want}")),
                    );
                    ok = false;
                    continue;
                }
            };
            if let Some(why) = out_of_domain(name, &json, context) {
                self.push(
                    Diagnostic::new(Code::BadValue, f.value.span, format!("`{name}` {why}"))
                        .label("out of range")
                        .help("the provider would refuse the request (400), on every call"),
                );
                ok = false;
                continue;
            }
            out.push((name.to_string(), json));
        }
        ok.then_some(out)
    }
}

impl Checker {
    /// Checks a built rule's named targets against its options and condition, reported together
    /// with every other error: E0406 (a target outside the rule's `only` set; picks over
    /// `healthy` and `tagged` are filtered at dispatch instead) and, with a real catalog, E0408 (a
    /// target that does not serve the endpoint that the rule pins with
    /// `request.endpoint == "..."`). `requested` is the client's choice and is checked at request
    /// time.
    pub(super) fn rule_targets(&mut self, r: &RuleIr) {
        let denies = match &r.target {
            TargetIr::Deny { .. } => true,
            TargetIr::Chain(steps) => matches!(steps.first(), Some(TargetIr::Deny { .. })),
            _ => false,
        };
        if denies && r.options.cache.is_some() {
            self.push(
                Diagnostic::new(
                    Code::CacheOnDeny,
                    r.target_span,
                    format!("`{}` denies, and a denial is never cached", r.name),
                )
                .label("a `deny`")
                .help("remove `cache`: a refusal costs nothing to repeat"),
            );
        }
        let mut named = Vec::new();
        r.target.explicit_models(&mut |m| named.push(m));
        let name =
            |c: &crate::catalog::Catalog, m: ModelId| c.get(m).map_or_else(|| format!("#{m}"), |m| m.name.clone());
        if let Some(only) = &r.options.only {
            for m in named.iter().filter(|m| !only.models.contains(m)) {
                let d = Diagnostic::new(
                    Code::OnlyViolation,
                    r.target_span,
                    format!("`{}` is outside the rule's `only` set", name(&self.catalog, *m)),
                )
                .label("may be tried")
                .help("remove it from the targets, or widen `only`");
                self.push(d);
            }
        }
        let Some(pinned) = (!self.open).then(|| pinned_endpoint(&r.cond)).flatten() else { return };
        for m in named {
            let Some(model) = self.catalog.get(m).filter(|model| model.endpoint != pinned) else { continue };
            let d = Diagnostic::new(
                Code::WrongEndpoint,
                r.target_span,
                format!(
                    "`{}` serves {}, but this rule only takes {} requests",
                    model.name,
                    model.endpoint.as_str(),
                    pinned.as_str()
                ),
            )
            .label("wrong endpoint")
            .with_secondary(r.cond_span, "the endpoint is pinned here");
            self.push(d);
        }
    }
}

/// The endpoint a condition pins with a `request.endpoint == "..."` conjunct.
fn pinned_endpoint(cond: &Cond) -> Option<Endpoint> {
    cond.conjuncts().iter().find_map(|c| match c {
        Cond::Cmp {
            lhs: Operand::Fact(Fact::RequestEndpoint), rel: Rel::Eq, rhs: Operand::Lit(Lit::Str(s)), ..
        } => match s.as_str() {
            "chat" => Some(Endpoint::Chat),
            "embeddings" => Some(Endpoint::Embeddings),
            _ => None,
        },
        _ => None,
    })
}

/// Why a `with` value is outside what its field takes, if it is.
fn out_of_domain(name: &str, v: &serde_json::Value, context: Option<(&str, u64)>) -> Option<String> {
    let num = v.as_f64();
    let range = |lo: f64, hi: f64| num.filter(|n| !(lo..=hi).contains(n)).map(|_| format!("must be from {lo} to {hi}"));
    let one_of = |list: &[&str]| {
        v.as_str().filter(|s| !list.contains(s)).map(|s| format!("is `{s}`, which is not one of {}", list.join(", ")))
    };
    match name {
        "temperature" => range(0.0, 2.0),
        "top_p" => range(0.0, 1.0),
        "presence_penalty" | "frequency_penalty" => range(-2.0, 2.0),
        "top_logprobs" => range(0.0, 20.0),
        "n" => range(1.0, 128.0),
        "max_tokens" | "max_completion_tokens" => match (v.as_u64(), context) {
            (Some(0), _) => Some("must be at least 1".into()),
            (Some(n), Some((model, ctx))) if n > ctx => {
                Some(format!("is {n}, more than the {ctx}-token context of `{model}`, which receives it"))
            }
            _ => None,
        },
        "reasoning_effort" => one_of(&["minimal", "low", "medium", "high"]),
        "verbosity" => one_of(&["low", "medium", "high"]),
        "service_tier" => one_of(&["auto", "default", "flex", "priority"]),
        _ => None,
    }
}
