//! Step two: AST -> [`Checked`] plus diagnostics. Resolves every name (facts, `let` names,
//! models, functions, options, request fields), checks types, folds constants, then runs the
//! lint passes in `lints/`. It never stops at the first error: every finding is collected, and a
//! `Checked` policy is returned only when there is no error.

pub mod lints;
pub mod ranges;

use std::collections::HashMap;
use std::sync::Arc;

use crate::policy::diagnostic::codes::Code;
use crate::policy::ir::names::{self, FieldType};
use crate::policy::ir::*;

use crate::catalog::{Catalog, Endpoint, Model};
use crate::policy::diagnostic::Diagnostic;
use crate::policy::load::Source;
use crate::policy::syntax::ast::{self, CmpOp, Expr, Item, Target, Value};
use crate::policy::syntax::span::{Span, Spanned};
use crate::util::fuzzy::did_you_mean;

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

/// The type of a value, as the checker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Str,
    Num,
    Bool,
    Fraction,
    Money,
    Duration,
    /// The literal `none`: compares with anything by `==` and `!=`.
    Nothing,
}

impl Ty {
    fn describe(self) -> &'static str {
        match self {
            Ty::Str => "a string",
            Ty::Num => "a number",
            Ty::Bool => "a boolean",
            Ty::Fraction => "a percentage",
            Ty::Money => "a dollar amount",
            Ty::Duration => "a duration",
            Ty::Nothing => "`none`",
        }
    }
}

/// A resolved value.
#[derive(Clone, Debug)]
enum Typed {
    Fact(Fact, Ty),
    Lit(Lit, Ty),
    List(Vec<(Lit, Ty, Span)>),
    Cond(Cond),
    /// `budget.remaining` (true) or `budget.spent` (false): a percentage or dollars, by the other side.
    Budget(bool),
}

struct LetEntry {
    name_span: Span,
    value: Spanned<Expr>,
    used: bool,
    /// For condition lets: the index in `let_names` and the resolved condition.
    cond: Option<(usize, Cond)>,
}

struct Checker {
    diags: Vec<Diagnostic>,
    catalog: Catalog,
    open: bool,
    lets: HashMap<String, LetEntry>,
    let_names: Vec<String>,
    stack: Vec<String>,
}

fn lit_of(v: &Value) -> Option<(Lit, Ty)> {
    Some(match v {
        Value::Str(s) => (Lit::Str(s.clone()), Ty::Str),
        Value::Num(n, _) => (Lit::Num(*n), Ty::Num),
        Value::Percent(n, _) => (Lit::Num(*n), Ty::Fraction),
        Value::Dollars(n, _) => (Lit::Num(*n), Ty::Money),
        #[expect(clippy::cast_precision_loss, reason = "durations in ms are far below 2^52")]
        Value::Duration(ms, _) => (Lit::Num(*ms as f64), Ty::Duration),
        Value::Bool(b) => (Lit::Bool(*b), Ty::Bool),
        Value::None => (Lit::None, Ty::Nothing),
        _ => return None,
    })
}

fn fact_ty(f: &Fact) -> Ty {
    match f {
        Fact::Prompt
        | Fact::PromptLast
        | Fact::PromptSystem
        | Fact::RequestModel
        | Fact::RequestEndpoint
        | Fact::UserTier
        | Fact::UserName
        | Fact::UserId
        | Fact::Header(_)
        | Fact::Metadata(_)
        | Fact::TimeWeekday => Ty::Str,
        Fact::PromptTokens | Fact::PromptChars | Fact::PromptMessages | Fact::RequestMaxTokens | Fact::TimeHour => {
            Ty::Num
        }
        Fact::RequestStream | Fact::RequestTools | Fact::RequestImages | Fact::Healthy(_) => Ty::Bool,
        Fact::BudgetRemainingFraction | Fact::BudgetSpentFraction => Ty::Fraction,
        Fact::BudgetRemainingUsd | Fact::BudgetSpentUsd => Ty::Money,
        Fact::Latency(_) => Ty::Duration,
    }
}

impl Checker {
    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn rules(&mut self, items: &[Item]) -> Option<Vec<RuleIr>> {
        // Lets first: they may be used before they are defined.
        for item in items {
            if let Item::Let(l) = item {
                let name = &l.node.name;
                if names::fact(&name.node).is_some() || names::FUNCTIONS.contains(&name.node.as_str()) {
                    self.push(
                        Diagnostic::new(Code::DuplicateLet, name.span, format!("`{}` is a built-in name", name.node))
                            .label("cannot be redefined")
                            .help("choose another name"),
                    );
                    continue;
                }
                if let Some(prev) = self.lets.get(&name.node) {
                    let prev_span = prev.name_span;
                    self.push(
                        Diagnostic::new(Code::DuplicateLet, name.span, format!("`{}` is defined twice", name.node))
                            .label("defined again here")
                            .with_secondary(prev_span, "first defined here")
                            .help("rename one of them"),
                    );
                    continue;
                }
                self.lets.insert(
                    name.node.clone(),
                    LetEntry { name_span: name.span, value: l.node.value.clone(), used: false, cond: None },
                );
            }
        }
        let mut rules = Vec::new();
        let mut default: Option<(RuleIr, Span)> = None;
        let mut seen: HashMap<String, Span> = HashMap::new();
        for item in items {
            match item {
                Item::Rule(r) => {
                    let name = &r.node.name;
                    if let Some(prev) = seen.get(&name.node) {
                        self.push(
                            Diagnostic::new(
                                Code::DuplicateRule,
                                name.span,
                                format!("two rules are named `{}`", name.node),
                            )
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
                    if let (Some(cond), Some(target), Some(options)) = (cond, target, options) {
                        rules.push(RuleIr {
                            name: name.node.clone(),
                            span: name.span,
                            is_default: false,
                            cond,
                            cond_span: r.node.when_span,
                            target,
                            target_span: r.node.then.span,
                            options,
                        });
                    }
                }
                Item::Default(d) => {
                    let kw = Span { end: d.span.start + 7, ..d.span };
                    if let Some((_, prev)) = &default {
                        let prev = *prev;
                        self.push(
                            Diagnostic::new(Code::DuplicateDefault, kw, "a policy has one `default`")
                                .label("second default")
                                .with_secondary(prev, "first default")
                                .help("remove one of them"),
                        );
                        continue;
                    }
                    let options = self.options(&d.node.options);
                    let target = self.target(&d.node.then);
                    if let (Some(target), Some(options)) = (target, options) {
                        default = Some((
                            RuleIr {
                                name: "default".into(),
                                span: kw,
                                is_default: true,
                                cond: Cond::Const(true),
                                cond_span: kw,
                                target,
                                target_span: d.node.then.span,
                                options,
                            },
                            kw,
                        ));
                    }
                }
                Item::Let(_) | Item::Include(_) => {}
            }
        }
        // Resolve lets that no rule used, so that their errors show too.
        let unresolved: Vec<String> = self.lets.iter().filter(|(_, l)| !l.used).map(|(n, _)| n.clone()).collect();
        for n in unresolved {
            if let Some(l) = self.lets.get(&n) {
                let v = l.value.clone();
                let before = self.lets.get(&n).map(|l| l.used);
                let _ = self.expr_typed(&v);
                if let (Some(l), Some(b)) = (self.lets.get_mut(&n), before) {
                    l.used = b;
                }
            }
        }
        match default {
            Some((d, _)) => rules.push(d),
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

    // ---- Conditions ------------------------------------------------------------------------

    fn cond(&mut self, e: &Spanned<Expr>) -> Option<Cond> {
        match self.expr_typed(e)? {
            Typed::Cond(c) => Some(c),
            Typed::Fact(f, Ty::Bool) => {
                let label = crate::policy::fmt::expr(&e.node);
                Some(Cond::Truthy { fact: f, label })
            }
            Typed::Lit(Lit::Bool(b), _) => Some(Cond::Const(b)),
            other => {
                let what = match &other {
                    Typed::Fact(f, t) => format!("`{}` is {}", names::fact_name(f, &self.catalog), t.describe()),
                    Typed::Lit(_, t) => format!("this is {}", t.describe()),
                    Typed::List(_) => "this is a list".to_string(),
                    Typed::Budget(_) => "this is a budget amount".to_string(),
                    Typed::Cond(_) => String::new(),
                };
                self.push(
                    Diagnostic::new(Code::TypeMismatch, e.span, "a condition must be true or false")
                        .label(what)
                        .help("compare it with something, as in `prompt.tokens > 1k` or `user.tier == \"free\"`"),
                );
                None
            }
        }
    }

    fn expr_typed(&mut self, e: &Spanned<Expr>) -> Option<Typed> {
        match &e.node {
            Expr::Or(ts) | Expr::And(ts) => {
                let mut out = Vec::new();
                let mut ok = true;
                for t in ts {
                    match self.cond(t) {
                        Some(c) => out.push(c),
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                Some(Typed::Cond(if matches!(e.node, Expr::Or(_)) { Cond::Or(out) } else { Cond::And(out) }))
            }
            Expr::Not(x) => Some(Typed::Cond(Cond::Not(Box::new(self.cond(x)?)))),
            Expr::Paren(x) => Some(Typed::Cond(self.cond(x)?)),
            Expr::Value(v) => self.value(v),
            Expr::Matches { lhs, regex } => {
                let label = crate::policy::fmt::expr(&e.node);
                let l = self.value(lhs);
                let pattern = if regex.node.insensitive {
                    format!("(?i){}", regex.node.pattern)
                } else {
                    regex.node.pattern.clone()
                };
                let re_ok = match regex::Regex::new(&pattern) {
                    Ok(_) => true,
                    Err(err) => {
                        let msg = err.to_string();
                        let detail = msg
                            .lines()
                            .rev()
                            .find(|l| l.starts_with("error:"))
                            .unwrap_or(&msg)
                            .trim_start_matches("error: ");
                        self.push(
                            Diagnostic::new(Code::InvalidRegex, regex.span, format!("invalid regex: {detail}"))
                                .label("this regex")
                                .help("regexes use Rust's syntax (https://docs.rs/regex); write `\\/` for a slash"),
                        );
                        false
                    }
                };
                let fact = match l? {
                    Typed::Fact(f, Ty::Str) => f,
                    other => {
                        self.mismatch_side(lhs.span, &other, "`matches` searches text");
                        return None;
                    }
                };
                re_ok.then_some(Typed::Cond(Cond::Regex { fact, pattern, label }))
            }
            Expr::Compare { lhs, op, rhs } => {
                let label = crate::policy::fmt::expr(&e.node);
                let l = self.value(lhs);
                let r = self.value(rhs);
                let (l, r) = (l?, r?);
                self.compare(e.span, lhs, op, rhs, l, r, label).map(Typed::Cond)
            }
        }
    }

    fn mismatch_side(&mut self, span: Span, t: &Typed, why: &str) {
        let what = match t {
            Typed::Fact(f, ty) => format!("`{}` is {}", names::fact_name(f, &self.catalog), ty.describe()),
            Typed::Lit(_, ty) => format!("this is {}", ty.describe()),
            Typed::List(_) => "this is a list".into(),
            Typed::Cond(_) => "this is a condition".into(),
            Typed::Budget(_) => "this is a budget amount".into(),
        };
        self.push(Diagnostic::new(Code::TypeMismatch, span, format!("type mismatch: {why}")).label(what));
    }

    #[expect(clippy::too_many_arguments, reason = "the pieces of one comparison")]
    fn compare(
        &mut self,
        span: Span,
        lhs: &Spanned<Value>,
        op: &Spanned<CmpOp>,
        rhs: &Spanned<Value>,
        l: Typed,
        r: Typed,
        label: String,
    ) -> Option<Cond> {
        // Budget facts take their unit from the other side.
        let unit = |t: &Typed| match t {
            Typed::Lit(_, ty) | Typed::Fact(_, ty) => Some(*ty),
            _ => None,
        };
        let budget = |remaining: bool, other: Option<Ty>| -> Option<Typed> {
            let f = match (remaining, other?) {
                (true, Ty::Fraction) => Fact::BudgetRemainingFraction,
                (true, Ty::Money | Ty::Nothing) => Fact::BudgetRemainingUsd,
                (false, Ty::Fraction) => Fact::BudgetSpentFraction,
                (false, Ty::Money | Ty::Nothing) => Fact::BudgetSpentUsd,
                _ => return None,
            };
            let ty = fact_ty(&f);
            Some(Typed::Fact(f, ty))
        };
        let (l, r) = match (l, r) {
            (Typed::Budget(b), other) => match budget(b, unit(&other)) {
                Some(t) => (t, other),
                None => {
                    self.push(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            rhs.span,
                            "type mismatch: a budget compares with a percentage or a dollar amount",
                        )
                        .label("expected `10%` or `$5`")
                        .with_secondary(lhs.span, "a budget"),
                    );
                    return None;
                }
            },
            (other, Typed::Budget(b)) => match budget(b, unit(&other)) {
                Some(t) => (other, t),
                None => {
                    self.push(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            lhs.span,
                            "type mismatch: a budget compares with a percentage or a dollar amount",
                        )
                        .label("expected `10%` or `$5`"),
                    );
                    return None;
                }
            },
            pair => pair,
        };
        let operand = |t: &Typed| match t {
            Typed::Fact(f, ty) => Some((Operand::Fact(f.clone()), *ty)),
            Typed::Lit(l, ty) => Some((Operand::Lit(l.clone()), *ty)),
            _ => None,
        };
        match op.node {
            CmpOp::Eq | CmpOp::Ne | CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => {
                let (Some((lo, lt)), Some((ro, rt))) = (operand(&l), operand(&r)) else {
                    let (bad_span, bad) = if operand(&l).is_none() { (lhs.span, &l) } else { (rhs.span, &r) };
                    let hint = if matches!(bad, Typed::List(_)) { ", use `in` for a list" } else { "" };
                    let bad = bad.clone();
                    self.mismatch_side(
                        bad_span,
                        &bad,
                        &format!("`{}` compares two single values{hint}", op.node.as_str()),
                    );
                    return None;
                };
                let ordering = !matches!(op.node, CmpOp::Eq | CmpOp::Ne);
                let compatible = lt == rt || (!ordering && (lt == Ty::Nothing || rt == Ty::Nothing));
                if !compatible {
                    self.push(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            span,
                            format!("type mismatch: cannot compare {} with {}", lt.describe(), rt.describe()),
                        )
                        .label(format!("{} {} {}", lt.describe(), op.node.as_str(), rt.describe()))
                        .maybe_help(mismatch_help(lt, rt, rhs)),
                    );
                    return None;
                }
                if ordering && matches!(lt, Ty::Str | Ty::Bool | Ty::Nothing) {
                    self.push(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            op.span,
                            format!("type mismatch: {} cannot be ordered", lt.describe()),
                        )
                        .label(format!("`{}` needs numbers, durations, percentages or amounts", op.node.as_str()))
                        .help("use `==`, `!=`, `in` or `starts_with` for strings"),
                    );
                    return None;
                }
                if let (Operand::Fact(Fact::TimeWeekday), Operand::Lit(Lit::Str(s)))
                | (Operand::Lit(Lit::Str(s)), Operand::Fact(Fact::TimeWeekday)) = (&lo, &ro)
                {
                    if !names::WEEKDAYS.contains(&s.as_str()) {
                        self.push(
                            Diagnostic::new(Code::BadValue, rhs.span, format!("`{s}` is not a weekday"))
                                .label("never equals `time.weekday`")
                                .help("weekdays are \"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\" and \"sun\""),
                        );
                        return None;
                    }
                }
                let rel = match op.node {
                    CmpOp::Eq => Rel::Eq,
                    CmpOp::Ne => Rel::Ne,
                    CmpOp::Lt => Rel::Lt,
                    CmpOp::Le => Rel::Le,
                    CmpOp::Gt => Rel::Gt,
                    _ => Rel::Ge,
                };
                Some(fold_cmp(lo, rel, ro, label))
            }
            CmpOp::In | CmpOp::NotIn => {
                let (fact, ty) = match &l {
                    Typed::Fact(f, ty) => (f.clone(), *ty),
                    other => {
                        let other = other.clone();
                        self.mismatch_side(lhs.span, &other, "the left side of `in` must be a fact");
                        return None;
                    }
                };
                let Typed::List(items) = r else {
                    self.mismatch_side(rhs.span, &r, "the right side of `in` must be a list");
                    return None;
                };
                let mut list = Vec::new();
                for (lit, t, sp) in items {
                    if t != ty && t != Ty::Nothing {
                        self.push(
                            Diagnostic::new(
                                Code::TypeMismatch,
                                sp,
                                format!(
                                    "type mismatch: the list holds {}, the fact is {}",
                                    t.describe(),
                                    ty.describe()
                                ),
                            )
                            .label("this item"),
                        );
                        return None;
                    }
                    list.push(lit);
                }
                Some(Cond::In { fact, list, negate: op.node == CmpOp::NotIn, label })
            }
            CmpOp::Contains | CmpOp::ContainsAny | CmpOp::ContainsAll | CmpOp::StartsWith => {
                let fact = match &l {
                    Typed::Fact(f, Ty::Str) => f.clone(),
                    other => {
                        let other = other.clone();
                        self.mismatch_side(lhs.span, &other, &format!("`{}` searches text", op.node.as_str()));
                        return None;
                    }
                };
                let needles: Vec<String> = match (op.node, r) {
                    (CmpOp::Contains | CmpOp::StartsWith, Typed::Lit(Lit::Str(s), _)) => vec![s],
                    (CmpOp::Contains | CmpOp::StartsWith, Typed::List(_)) => {
                        self.push(
                            Diagnostic::new(
                                Code::TypeMismatch,
                                rhs.span,
                                format!("type mismatch: `{}` takes one string", op.node.as_str()),
                            )
                            .label("this is a list")
                            .help("use `contains any` or `contains all` with a list"),
                        );
                        return None;
                    }
                    (CmpOp::ContainsAny | CmpOp::ContainsAll, Typed::List(items)) => {
                        let mut out = Vec::new();
                        for (lit, _, sp) in items {
                            match lit {
                                Lit::Str(s) => out.push(s),
                                _ => {
                                    self.push(
                                        Diagnostic::new(
                                            Code::TypeMismatch,
                                            sp,
                                            "type mismatch: keywords must be strings",
                                        )
                                        .label("not a string"),
                                    );
                                    return None;
                                }
                            }
                        }
                        out
                    }
                    (CmpOp::ContainsAny | CmpOp::ContainsAll, Typed::Lit(Lit::Str(s), _)) => {
                        vec![s]
                    }
                    (_, other) => {
                        self.mismatch_side(rhs.span, &other, &format!("`{}` takes literal strings", op.node.as_str()));
                        return None;
                    }
                };
                if needles.iter().any(String::is_empty) {
                    self.push(
                        Diagnostic::new(Code::BadValue, rhs.span, "an empty keyword matches every text")
                            .label("empty string")
                            .help("remove it"),
                    );
                    return None;
                }
                let op = match op.node {
                    CmpOp::ContainsAll => TextOp::ContainsAll,
                    CmpOp::StartsWith => TextOp::StartsWith,
                    _ => TextOp::ContainsAny,
                };
                if needles.is_empty() {
                    return Some(Cond::Const(op == TextOp::ContainsAll));
                }
                Some(Cond::Text { fact, op, needles, label })
            }
        }
    }

    fn value(&mut self, v: &Spanned<Value>) -> Option<Typed> {
        if let Some((lit, ty)) = lit_of(&v.node) {
            return Some(Typed::Lit(lit, ty));
        }
        match &v.node {
            Value::List(items) => {
                let mut out = Vec::new();
                for i in items {
                    match self.value(i)? {
                        Typed::Lit(l, t) => out.push((l, t, i.span)),
                        Typed::List(inner) => out.extend(inner),
                        other => {
                            self.mismatch_side(i.span, &other, "list items must be literals");
                            return None;
                        }
                    }
                }
                Some(Typed::List(out))
            }
            Value::Name(n) => self.name(n, v.span),
            Value::Call(f, args) => self.call(f, args, v.span),
            _ => None,
        }
    }

    fn name(&mut self, n: &str, span: Span) -> Option<Typed> {
        if n == "budget.remaining" {
            return Some(Typed::Budget(true));
        }
        if n == "budget.spent" {
            return Some(Typed::Budget(false));
        }
        if let Some(f) = names::fact(n) {
            let ty = fact_ty(&f);
            return Some(Typed::Fact(f, ty));
        }
        if self.lets.contains_key(n) {
            return self.let_ref(n, span);
        }
        let root = n.split('.').next().unwrap_or(n);
        if n.contains('.') && names::ROOTS.contains(&root) {
            let help = did_you_mean(n, names::FACTS.iter().copied());
            self.push(
                Diagnostic::new(Code::UnknownFact, span, format!("unknown fact `{n}`")).label("not a fact").help(
                    match help {
                        Some(h) => format!("did you mean `{h}`?"),
                        None => format!("the facts under `{root}` are {}", facts_under(root)),
                    },
                ),
            );
            return None;
        }
        let candidates: Vec<&str> = self.lets.keys().map(String::as_str).chain(names::FACTS.iter().copied()).collect();
        let help = match did_you_mean(n, candidates) {
            Some(h) => format!("did you mean `{h}`?"),
            None if self.catalog.id(n).is_some() => {
                format!("models are not values here; to compare with the model's name, write \"{n}\"")
            }
            None => format!("to use the text `{n}`, quote it: \"{n}\""),
        };
        self.push(
            Diagnostic::new(Code::UnknownName, span, format!("unknown name `{n}`"))
                .label("not a fact or a `let` name")
                .help(help),
        );
        None
    }

    fn let_ref(&mut self, n: &str, span: Span) -> Option<Typed> {
        if self.stack.iter().any(|s| s == n) {
            self.push(
                Diagnostic::new(Code::UnknownName, span, format!("`{n}` refers to itself"))
                    .label("used inside its own definition")
                    .help("a `let` cannot refer to itself, directly or through other lets"),
            );
            return None;
        }
        let entry = self.lets.get_mut(n)?;
        entry.used = true;
        if let Some((idx, c)) = &entry.cond {
            return Some(Typed::Cond(Cond::Named(*idx, Box::new(c.clone()))));
        }
        let value = entry.value.clone();
        self.stack.push(n.to_string());
        let t = self.expr_typed(&value);
        self.stack.pop();
        let t = t?;
        if let (Typed::Cond(c), false) = (&t, matches!(value.node, Expr::Value(_))) {
            let idx = self.let_names.len();
            self.let_names.push(n.to_string());
            if let Some(e) = self.lets.get_mut(n) {
                e.cond = Some((idx, c.clone()));
            }
            return Some(Typed::Cond(Cond::Named(idx, Box::new(c.clone()))));
        }
        Some(t)
    }

    fn model_arg(&mut self, v: &Spanned<Value>) -> Option<crate::catalog::ModelId> {
        let name = match &v.node {
            Value::Name(n) | Value::Str(n) => n.clone(),
            _ => {
                self.push(Diagnostic::new(Code::BadArguments, v.span, "expected a model name").label("not a model"));
                return None;
            }
        };
        self.model(&name, v.span)
    }

    fn model(&mut self, name: &str, span: Span) -> Option<crate::catalog::ModelId> {
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

    fn call(&mut self, f: &Spanned<String>, args: &[Spanned<Value>], span: Span) -> Option<Typed> {
        let arity = |this: &mut Self, n: usize, usage: &str| -> bool {
            if args.len() == n {
                return true;
            }
            this.push(
                Diagnostic::new(
                    Code::BadArguments,
                    span,
                    format!("`{}` takes {n} argument{}", f.node, if n == 1 { "" } else { "s" }),
                )
                .label(format!("{} given", args.len()))
                .help(format!("usage: {usage}")),
            );
            false
        };
        match f.node.as_str() {
            "header" => {
                if !arity(self, 1, "header(\"x-team\")") {
                    return None;
                }
                match args.first().map(|a| &a.node) {
                    Some(Value::Str(h)) => Some(Typed::Fact(Fact::Header(h.to_ascii_lowercase()), Ty::Str)),
                    _ => {
                        let sp = args.first().map_or(span, |a| a.span);
                        self.push(
                            Diagnostic::new(Code::BadArguments, sp, "`header` takes the header's name as a string")
                                .label("expected a string")
                                .help("usage: header(\"x-team\")"),
                        );
                        None
                    }
                }
            }
            "healthy" | "latency" => {
                if !arity(self, 1, &format!("{}(gpt-4o-mini)", f.node)) {
                    return None;
                }
                let m = self.model_arg(args.first()?)?;
                Some(if f.node == "healthy" {
                    Typed::Fact(Fact::Healthy(m), Ty::Bool)
                } else {
                    Typed::Fact(Fact::Latency(m), Ty::Duration)
                })
            }
            "tagged" => {
                self.push(
                    Diagnostic::new(Code::TypeMismatch, span, "`tagged(...)` is a set of models, not a value")
                        .label("a set")
                        .help("use it in a pick or `only`: `cheapest(tagged(\"eu\"))`, `only tagged(\"eu\")`"),
                );
                None
            }
            other => {
                let help = did_you_mean(other, names::FUNCTIONS.iter().copied())
                    .map(|h| format!("did you mean `{h}`?"))
                    .unwrap_or_else(|| {
                        format!(
                            "the functions are {}",
                            names::FUNCTIONS.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
                        )
                    });
                self.push(
                    Diagnostic::new(Code::UnknownFunction, f.span, format!("unknown function `{other}`"))
                        .label("not a function")
                        .help(help),
                );
                None
            }
        }
    }

    // ---- Targets ---------------------------------------------------------------------------

    fn target(&mut self, t: &Spanned<Target>) -> Option<TargetIr> {
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
                let with = self.overrides(with);
                Some(TargetIr::Model { model: model?, with: with? })
            }
            Target::Requested { with } => Some(TargetIr::Requested { with: self.overrides(with)? }),
            Target::Pick { kind, set } => {
                let set = self.set(set, t.span)?;
                if set.models.is_empty() {
                    self.push(
                        Diagnostic::new(Code::EmptySet, t.span, format!("`{}` picks from an empty set", kind.as_str()))
                            .label("no model is in this set")
                            .help("check the tags in the catalog"),
                    );
                    return None;
                }
                Some(TargetIr::Pick { kind: *kind, set })
            }
            Target::Split(arms) => {
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
                        Diagnostic::new(
                            Code::SplitWeights,
                            t.span,
                            format!("split weights add up to {shown}%, not 100%"),
                        )
                        .label("these weights")
                        .help("make the weights add up to exactly 100%"),
                    );
                    ok = false;
                }
                ok.then_some(TargetIr::Split(out))
            }
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

    fn set(&mut self, values: &[Spanned<Value>], span: Span) -> Option<SetIr> {
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
                Value::Call(f, args) if f.node == "tagged" => {
                    let tag = match args.as_slice() {
                        [Spanned { node: Value::Str(s), .. }] => s.clone(),
                        _ => {
                            self.push(
                                Diagnostic::new(Code::BadArguments, v.span, "`tagged` takes one tag as a string")
                                    .label("here")
                                    .help("usage: tagged(\"eu\")"),
                            );
                            ok = false;
                            continue;
                        }
                    };
                    if single {
                        kind = SetKind::Tagged(tag.clone());
                    }
                    let ids: Vec<_> = self
                        .catalog
                        .ids()
                        .filter(|i| self.catalog.get(*i).is_some_and(|m| m.tags.contains(&tag)))
                        .collect();
                    if ids.is_empty() && !self.open {
                        let tags: std::collections::BTreeSet<&str> =
                            self.catalog.models().iter().flat_map(|m| m.tags.iter().map(String::as_str)).collect();
                        self.push(
                            Diagnostic::new(Code::EmptySet, v.span, format!("no model is tagged `{tag}`"))
                                .label("empty set")
                                .maybe_help(
                                    did_you_mean(&tag, tags.iter().copied()).map(|h| format!("did you mean `{h}`?")),
                                ),
                        );
                        ok = false;
                    }
                    models.extend(ids);
                }
                Value::Name(n) if self.lets.contains_key(n) => {
                    if let Some(l) = self.lets.get_mut(n) {
                        l.used = true;
                    }
                    let value = self.lets.get(n).map(|l| l.value.clone());
                    match value.map(|v| v.node) {
                        Some(Expr::Value(Spanned { node: Value::List(items), .. })) => {
                            for i in &items {
                                match self.model_arg(i) {
                                    Some(m) => models.push(m),
                                    None => ok = false,
                                }
                            }
                        }
                        _ => {
                            self.push(
                                Diagnostic::new(Code::TypeMismatch, v.span, format!("`{n}` is not a list of models"))
                                    .label("used as a set"),
                            );
                            ok = false;
                        }
                    }
                }
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
        if values.is_empty() {
            self.push(Diagnostic::new(Code::EmptySet, span, "an empty set").label("here"));
            ok = false;
        }
        ok.then_some(SetIr { kind, models })
    }

    fn overrides(&mut self, fields: &[ast::WithField]) -> Option<Overrides> {
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
            out.push((name.to_string(), json));
        }
        ok.then_some(out)
    }

    fn options(&mut self, opts: &[Spanned<ast::RuleOption>]) -> Option<RuleOptions> {
        let mut out = RuleOptions::default();
        let mut ok = true;
        let mut seen: Vec<&str> = Vec::new();
        for o in opts {
            let name = o.node.name.node.as_str();
            if seen.contains(&name) {
                self.push(
                    Diagnostic::new(Code::BadValue, o.node.name.span, format!("`{name}` is given twice"))
                        .label("again here")
                        .help("keep one"),
                );
                ok = false;
                continue;
            }
            seen.push(name);
            let one = match o.node.values.as_slice() {
                [v] => Some(&v.node),
                _ => None,
            };
            let bad = |this: &mut Self, want: &str| {
                this.push(
                    Diagnostic::new(Code::BadValue, o.span, format!("`{name}` takes {want}"))
                        .label(format!("expected {want}")),
                );
            };
            match name {
                "retries" => match one {
                    Some(Value::Num(n, _)) if *n >= 0.0 && *n <= 10.0 && n.fract() == 0.0 => {
                        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked 0..=10")]
                        let n = *n as u32;
                        out.retries = n;
                    }
                    _ => {
                        bad(self, "a whole number from 0 to 10");
                        ok = false;
                    }
                },
                "timeout" | "cache" => match one {
                    Some(Value::Duration(ms, _)) if *ms > 0 => {
                        if name == "timeout" {
                            out.timeout_ms = Some(*ms);
                        } else {
                            out.cache_ms = Some(*ms);
                        }
                    }
                    _ => {
                        bad(self, "a duration such as `20s`");
                        ok = false;
                    }
                },
                "tag" => match one {
                    Some(Value::Str(s)) => out.tag = Some(s.clone()),
                    _ => {
                        bad(self, "a string");
                        ok = false;
                    }
                },
                "only" => match self.set(&o.node.values, o.span) {
                    Some(s) => out.only = Some(s),
                    None => ok = false,
                },
                other => {
                    let help = did_you_mean(other, names::OPTIONS.iter().copied())
                        .map(|h| format!("did you mean `{h}`?"))
                        .unwrap_or_else(|| "rule options are `retries`, `timeout`, `cache`, `tag` and `only`".into());
                    self.push(
                        Diagnostic::new(
                            Code::UnknownOption,
                            o.node.name.span,
                            format!("unknown rule option `{other}`"),
                        )
                        .label("not an option")
                        .help(help),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
}

fn facts_under(root: &str) -> String {
    if root == "metadata" {
        return "`metadata.NAME` for any NAME".into();
    }
    names::FACTS
        .iter()
        .filter(|f| f.starts_with(&format!("{root}.")))
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn mismatch_help(lt: Ty, rt: Ty, rhs: &Spanned<Value>) -> Option<String> {
    Some(match (lt, rt) {
        (Ty::Str, Ty::Num) => match &rhs.node {
            Value::Num(_, raw) => format!("to compare with the text, quote it: \"{raw}\""),
            _ => return None,
        },
        (Ty::Num, Ty::Str) => "numbers are written without quotes, as in `100k`".into(),
        (Ty::Fraction, _) | (_, Ty::Fraction) => "percentages compare with percentages, as in `10%`".into(),
        (Ty::Duration, _) | (_, Ty::Duration) => "durations are written with a unit, as in `250ms` or `2s`".into(),
        (Ty::Money, _) | (_, Ty::Money) => "amounts are written in dollars, as in `$5`".into(),
        _ => return None,
    })
}

/// Builds a comparison, folding it when both sides are literals or the fact cannot be `none`.
fn fold_cmp(lhs: Operand, rel: Rel, rhs: Operand, label: String) -> Cond {
    match (&lhs, &rhs) {
        (Operand::Lit(a), Operand::Lit(b)) => Cond::Const(crate::policy::ir::value::compare_lits(a, rel, b)),
        (Operand::Fact(f), Operand::Lit(Lit::None)) | (Operand::Lit(Lit::None), Operand::Fact(f)) if !f.nullable() => {
            Cond::Const(rel == Rel::Ne)
        }
        _ => Cond::Cmp { lhs, rel, rhs, label },
    }
}
