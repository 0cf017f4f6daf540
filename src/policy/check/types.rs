//! Types and names: a value written in a condition -> a typed fact, literal, list or condition
//! (facts and `let` names resolved, function calls checked), or a diagnostic (E0202 unknown fact,
//! E0204 unknown name, E0203 unknown function, E0303 bad arguments, E0301 type mismatch).

use super::Checker;
use crate::policy::diagnostic::codes::Code;
use crate::policy::diagnostic::Diagnostic;
use crate::policy::ir::names::{self};
use crate::policy::ir::*;
use crate::policy::syntax::ast::{Expr, Value};
use crate::policy::syntax::span::{Span, Spanned};
use crate::util::fuzzy::did_you_mean;

/// The type of a value, as the checker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ty {
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
    pub(super) fn describe(self) -> &'static str {
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
pub(super) enum Typed {
    Fact(Fact, Ty),
    Lit(Lit, Ty),
    List(Vec<(Lit, Ty, Span)>),
    Cond(Cond),
    /// `budget.remaining` (true) or `budget.spent` (false): a percentage or dollars, by the other side.
    Budget(bool),
}

pub(super) fn lit_of(v: &Value) -> Option<(Lit, Ty)> {
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

pub(super) fn fact_ty(f: &Fact) -> Ty {
    match f {
        Fact::Prompt
        | Fact::PromptLast
        | Fact::PromptSystem
        | Fact::RequestModel
        | Fact::RequestEndpoint
        | Fact::RequestApi
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
    pub(super) fn mismatch_side(&mut self, span: Span, t: &Typed, why: &str) {
        let what = match t {
            Typed::Fact(f, ty) => format!("`{}` is {}", names::fact_name(f, &self.catalog), ty.describe()),
            Typed::Lit(_, ty) => format!("this is {}", ty.describe()),
            Typed::List(_) => "this is a list".into(),
            Typed::Cond(_) => "this is a condition".into(),
            Typed::Budget(_) => "this is a budget amount".into(),
        };
        self.push(Diagnostic::new(Code::TypeMismatch, span, format!("type mismatch: {why}")).label(what));
    }

    pub(super) fn value(&mut self, v: &Spanned<Value>) -> Option<Typed> {
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

    pub(super) fn name(&mut self, n: &str, span: Span) -> Option<Typed> {
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

    pub(super) fn let_ref(&mut self, n: &str, span: Span) -> Option<Typed> {
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

    pub(super) fn call(&mut self, f: &Spanned<String>, args: &[Spanned<Value>], span: Span) -> Option<Typed> {
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
                    // An HTTP field name is a token: letters, digits and `!#$%&'*+-.^_`|~`.
                    Some(Value::Str(h))
                        if h.is_empty()
                            || !h.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)) =>
                    {
                        let sp = args.first().map_or(span, |a| a.span);
                        self.push(
                            Diagnostic::new(Code::BadValue, sp, format!("`{h}` is not a header name"))
                                .label("no request can carry this header")
                                .help("header names are letters, digits and `-` (no spaces or `:`), as in \"x-team\""),
                        );
                        None
                    }
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

pub(super) fn mismatch_help(lt: Ty, rt: Ty, rhs: &Spanned<Value>) -> Option<String> {
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
