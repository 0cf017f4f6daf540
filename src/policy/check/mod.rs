//! Step two: AST -> [`Checked`] plus diagnostics. Resolves every name (facts, `let` names,
//! models, functions, options, request fields), checks types, folds constants, then runs the
//! lint passes in `lints/`. It never stops at the first error: every finding is collected, and a
//! `Checked` policy is returned only when there is no error.

mod conditions;
pub mod lints;
mod options;
pub mod ranges;
mod targets;
mod types;
pub mod values;

use std::collections::HashMap;
use std::sync::Arc;

use crate::policy::diagnostic::codes::Code;
use crate::policy::ir::names::{self};
use crate::policy::ir::*;

use crate::catalog::{Catalog, Endpoint, Model};
use crate::policy::diagnostic::Diagnostic;
use crate::policy::load::Source;
use crate::policy::syntax::ast::{self, Expr, Item, Target, Value};
use crate::policy::syntax::span::{Span, Spanned};

/// What the checker should add beyond the default checks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Report each rule's worst-case cost (`lint --costs`).
    pub costs: bool,
}

/// The outcome of checking: the policy when it has no error, and every diagnostic.
#[derive(Debug)]
pub struct Outcome {
    /// The checked policy, when there is no error.
    pub checked: Option<Checked>,
    /// Every finding, errors and warnings, in source order.
    pub diagnostics: Vec<Diagnostic>,
    /// The sources the diagnostics point into.
    pub sources: Arc<crate::policy::syntax::span::SourceMap>,
}

/// Checks a loaded policy against a catalog. Without a catalog (`lint` with no config), any model
/// name is accepted and catalog checks are skipped.
pub fn check(source: Source, catalog: Option<&Catalog>, opts: Options) -> Outcome {
    let Source { sources, items, mut diagnostics, version, .. } = source;
    if diagnostics.iter().any(Diagnostic::is_error) {
        // A file that does not parse or load: checking the rest would only add noise.
        return Outcome { checked: None, diagnostics, sources: Arc::new(sources) };
    }
    let open = catalog.is_none();
    let catalog = match catalog {
        Some(c) => c.clone(),
        None => Catalog::new(collect_model_names(&items).into_iter().map(open_model).collect()),
    };
    let mut c =
        Checker { diags: Vec::new(), catalog, open, lets: HashMap::new(), let_names: Vec::new(), stack: Vec::new() };
    let rules = c.rules(&items);
    diagnostics.append(&mut c.diags);
    let had_errors = diagnostics.iter().any(Diagnostic::is_error);
    let sources = Arc::new(sources);
    let checked = Checked {
        rules: rules.unwrap_or_default(),
        lets: c.let_names,
        sources: sources.clone(),
        catalog: Arc::new(c.catalog),
        version,
    };
    if !had_errors && !checked.rules.is_empty() {
        lints::run(&checked, !open, opts, &mut diagnostics);
        for (name, l) in &c.lets {
            if !l.used && !name.starts_with('_') {
                diagnostics.push(
                    Diagnostic::new(Code::UnusedLet, l.name_span, format!("`{name}` is never used"))
                        .label("defined here")
                        .help("remove it, or prefix its name with `_`"),
                );
            }
        }
    }
    diagnostics.sort_by_key(|d| (d.primary.span.file, d.primary.span.start, d.code));
    let ok = !diagnostics.iter().any(Diagnostic::is_error);
    Outcome { checked: ok.then_some(checked), diagnostics, sources }
}

fn open_model(name: String) -> Model {
    Model {
        name: name.clone(),
        provider: String::new(),
        upstream_id: name,
        price: None,
        context: None,
        tags: Vec::new(),
        capabilities: vec![crate::catalog::Capability::Tools, crate::catalog::Capability::Images],
        endpoint: Endpoint::Chat,
    }
}

/// Every name written where a model goes, for checking without a catalog.
fn collect_model_names(items: &[Item]) -> Vec<String> {
    fn target(t: &Target, out: &mut Vec<String>) {
        match t {
            Target::Chain(s) => s.iter().for_each(|s| target(&s.node, out)),
            Target::Model { name, .. } => out.push(name.node.clone()),
            Target::Split(arms) => arms.iter().for_each(|a| target(&a.target.node, out)),
            Target::Pick { set, .. } => set.iter().for_each(|v| value(&v.node, out)),
            _ => {}
        }
    }
    fn value(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Name(n) if n != "healthy" && !n.contains('.') => out.push(n.clone()),
            Value::Str(s) => out.push(s.clone()),
            Value::List(vs) => vs.iter().for_each(|v| value(&v.node, out)),
            _ => {}
        }
    }
    fn expr(e: &Expr, out: &mut Vec<String>) {
        match e {
            Expr::Or(ts) | Expr::And(ts) => ts.iter().for_each(|t| expr(&t.node, out)),
            Expr::Not(x) | Expr::Paren(x) => expr(&x.node, out),
            Expr::Compare { lhs, rhs, .. } => {
                call(&lhs.node, out);
                call(&rhs.node, out);
            }
            Expr::Matches { lhs, .. } => call(&lhs.node, out),
            Expr::Value(v) => call(&v.node, out),
        }
    }
    fn call(v: &Value, out: &mut Vec<String>) {
        if let Value::Call(f, args) = v {
            if f.node == "healthy" || f.node == "latency" {
                args.iter().for_each(|a| value(&a.node, out));
            }
        }
    }
    let lets: Vec<&str> = items
        .iter()
        .filter_map(|i| match i {
            Item::Let(l) => Some(l.node.name.node.as_str()),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for item in items {
        match item {
            Item::Rule(r) => {
                expr(&r.node.when.node, &mut out);
                target(&r.node.then.node, &mut out);
                for o in &r.node.options {
                    if o.node.name.node == "only" {
                        o.node.values.iter().for_each(|v| value(&v.node, &mut out));
                    }
                }
            }
            Item::Default(d) => target(&d.node.then.node, &mut out),
            Item::Let(l) => {
                expr(&l.node.value.node, &mut out);
                if let Expr::Value(v) = &l.node.value.node {
                    if let Value::List(vs) = &v.node {
                        vs.iter().filter(|v| matches!(v.node, Value::Name(_))).for_each(|v| value(&v.node, &mut out));
                    }
                }
            }
            Item::Include(_) => {}
        }
    }
    out.retain(|n| !lets.contains(&n.as_str()));
    out
}

pub(super) struct LetEntry {
    name_span: Span,
    value: Spanned<Expr>,
    used: bool,
    /// For condition lets: the index in `let_names` and the resolved condition.
    cond: Option<(usize, Cond)>,
}

pub(super) struct Checker {
    diags: Vec<Diagnostic>,
    catalog: Catalog,
    open: bool,
    lets: HashMap<String, LetEntry>,
    let_names: Vec<String>,
    stack: Vec<String>,
}

impl Checker {
    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Every rule, the default last; `None` without a default.
    fn rules(&mut self, items: &[Item]) -> Option<Vec<RuleIr>> {
        // Lets first: they may be used before they are defined.
        for item in items {
            if let Item::Let(l) = item {
                self.define_let(l);
            }
        }
        let mut rules = Vec::new();
        let mut default: Option<(RuleIr, Span)> = None;
        let mut seen: HashMap<String, Span> = HashMap::new();
        for item in items {
            match item {
                Item::Rule(r) => rules.extend(self.rule(r, &mut seen)),
                Item::Default(d) => self.default(d, &mut default),
                Item::Let(_) | Item::Include(_) => {}
            }
        }
        self.resolve_unused_lets();
        match default {
            Some((d, _)) => rules.push(d),
            // A `default` whose target has an error of its own: that error is reported, not a
            // missing default.
            None if items.iter().any(|i| matches!(i, Item::Default(_))) => return None,
            None => {
                let end = items.last().map(Item::span).map(|s| Span { start: s.end, ..s }).unwrap_or_default();
                self.push(
                    Diagnostic::new(Code::MissingDefault, end, "the policy has no `default`")
                        .label("the policy ends here")
                        .help("add `default { then MODEL }` so that every request has somewhere to go"),
                );
                return None;
            }
        }
        Some(rules)
    }

    /// Records a `let` (E0207 for a built-in name or a name defined twice).
    fn define_let(&mut self, l: &Spanned<ast::Let>) {
        let name = &l.node.name;
        if names::fact(&name.node).is_some() || names::FUNCTIONS.contains(&name.node.as_str()) {
            self.push(
                Diagnostic::new(Code::DuplicateLet, name.span, format!("`{}` is a built-in name", name.node))
                    .label("cannot be redefined")
                    .help("choose another name"),
            );
            return;
        }
        if let Some(prev) = self.lets.get(&name.node) {
            let prev_span = prev.name_span;
            self.push(
                Diagnostic::new(Code::DuplicateLet, name.span, format!("`{}` is defined twice", name.node))
                    .label("defined again here")
                    .with_secondary(prev_span, "first defined here")
                    .help("rename one of them"),
            );
            return;
        }
        let entry = LetEntry { name_span: name.span, value: l.node.value.clone(), used: false, cond: None };
        self.lets.insert(name.node.clone(), entry);
    }

    /// One rule (E0402 for a name used twice; `seen` holds the names so far).
    fn rule(&mut self, r: &Spanned<ast::Rule>, seen: &mut HashMap<String, Span>) -> Option<RuleIr> {
        let name = &r.node.name;
        if let Some(prev) = seen.get(&name.node) {
            self.push(
                Diagnostic::new(Code::DuplicateRule, name.span, format!("two rules are named `{}`", name.node))
                    .label("second rule with this name")
                    .with_secondary(*prev, "first rule with this name")
                    .help("rule names show in `explain`, logs and metrics: make them unique"),
            );
        } else {
            seen.insert(name.node.clone(), name.span);
        }
        let cond = self.cond(&r.node.when);
        let options = self.options(&r.node.options);
        let target = self.target(&r.node.then);
        let rule = RuleIr {
            name: name.node.clone(),
            span: name.span,
            is_default: false,
            cond: cond?,
            cond_span: r.node.when_span,
            target: target?,
            target_span: r.node.then.span,
            options: options?,
        };
        self.rule_targets(&rule);
        Some(rule)
    }

    /// The default (E0405 for a second one; `default` holds the first, with its keyword's span).
    fn default(&mut self, d: &Spanned<ast::Default>, default: &mut Option<(RuleIr, Span)>) {
        let kw = Span { end: d.span.start + 7, ..d.span };
        if let Some((_, prev)) = default {
            let prev = *prev;
            self.push(
                Diagnostic::new(Code::DuplicateDefault, kw, "a policy has one `default`")
                    .label("second default")
                    .with_secondary(prev, "first default")
                    .help("remove one of them"),
            );
            return;
        }
        let options = self.options(&d.node.options);
        let target = self.target(&d.node.then);
        if let (Some(target), Some(options)) = (target, options) {
            let rule = RuleIr {
                name: "default".into(),
                span: kw,
                is_default: true,
                cond: Cond::Const(true),
                cond_span: kw,
                target,
                target_span: d.node.then.span,
                options,
            };
            self.rule_targets(&rule);
            *default = Some((rule, kw));
        }
    }

    /// Resolves the lets that no rule used, so that their errors show too (without marking them
    /// used: W0109 still reports them).
    fn resolve_unused_lets(&mut self) {
        let unresolved: Vec<String> = self.lets.iter().filter(|(_, l)| !l.used).map(|(n, _)| n.clone()).collect();
        for n in unresolved {
            if let Some(l) = self.lets.get(&n) {
                let v = l.value.clone();
                let _ = self.expr_typed(&v);
                if let Some(l) = self.lets.get_mut(&n) {
                    l.used = false;
                }
            }
        }
    }
}
