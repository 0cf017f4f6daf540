//! Conditions: a `when` expression -> a [`Cond`], with every comparison's types checked against
//! each other (E0301), regexes compiled (E0302) and constants folded.

use super::types::{fact_ty, mismatch_help, Ty, Typed};
use super::Checker;
use crate::policy::diagnostic::codes::Code;
use crate::policy::diagnostic::Diagnostic;
use crate::policy::ir::names::{self};
use crate::policy::ir::*;
use crate::policy::syntax::ast::{CmpOp, Expr, Value};
use crate::policy::syntax::span::{Span, Spanned};

impl Checker {
    pub(super) fn cond(&mut self, e: &Spanned<Expr>) -> Option<Cond> {
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

    pub(super) fn expr_typed(&mut self, e: &Spanned<Expr>) -> Option<Typed> {
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
                let c = Comparison { span: e.span, lhs, op, rhs, label };
                self.compare(&c, l, r).map(Typed::Cond)
            }
        }
    }

    /// A comparison: both sides resolved, budget facts given their unit by the other side, then
    /// checked by the kind of operator.
    fn compare(&mut self, c: &Comparison<'_>, l: Typed, r: Typed) -> Option<Cond> {
        let (l, r) = self.budget_units(c, l, r)?;
        match c.op.node {
            CmpOp::Eq | CmpOp::Ne | CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => self.relation(c, &l, &r),
            CmpOp::In | CmpOp::NotIn => self.membership(c, &l, r),
            CmpOp::Contains | CmpOp::ContainsAny | CmpOp::ContainsAll | CmpOp::StartsWith => self.text(c, &l, r),
        }
    }

    /// `budget.remaining` and `budget.spent` are a fraction or dollars, by the other side.
    fn budget_units(&mut self, c: &Comparison<'_>, l: Typed, r: Typed) -> Option<(Typed, Typed)> {
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
        let resolved = match (l, r) {
            (Typed::Budget(b), other) => {
                budget(b, unit(&other)).map(|t| (t, other)).ok_or((c.rhs.span, Some(c.lhs.span)))
            }
            (other, Typed::Budget(b)) => budget(b, unit(&other)).map(|t| (other, t)).ok_or((c.lhs.span, None)),
            pair => Ok(pair),
        };
        resolved
            .map_err(|(at, budget)| {
                let mut d = Diagnostic::new(
                    Code::TypeMismatch,
                    at,
                    "type mismatch: a budget compares with a percentage or a dollar amount",
                )
                .label("expected `10%` or `$5`");
                if let Some(b) = budget {
                    d = d.with_secondary(b, "a budget");
                }
                self.push(d);
            })
            .ok()
    }

    /// `== != < <= > >=` between two single values of compatible types.
    fn relation(&mut self, c: &Comparison<'_>, l: &Typed, r: &Typed) -> Option<Cond> {
        let operand = |t: &Typed| match t {
            Typed::Fact(f, ty) => Some((Operand::Fact(f.clone()), *ty)),
            Typed::Lit(l, ty) => Some((Operand::Lit(l.clone()), *ty)),
            _ => None,
        };
        let op = c.op.node;
        let (Some((lo, lt)), Some((ro, rt))) = (operand(l), operand(r)) else {
            let (bad_span, bad) = if operand(l).is_none() { (c.lhs.span, l) } else { (c.rhs.span, r) };
            let hint = if matches!(bad, Typed::List(_)) { ", use `in` for a list" } else { "" };
            self.mismatch_side(bad_span, bad, &format!("`{}` compares two single values{hint}", op.as_str()));
            return None;
        };
        let ordering = !matches!(op, CmpOp::Eq | CmpOp::Ne);
        let compatible = lt == rt || (!ordering && (lt == Ty::Nothing || rt == Ty::Nothing));
        if !compatible {
            self.push(
                Diagnostic::new(
                    Code::TypeMismatch,
                    c.span,
                    format!("type mismatch: cannot compare {} with {}", lt.describe(), rt.describe()),
                )
                .label(format!("{} {} {}", lt.describe(), op.as_str(), rt.describe()))
                .maybe_help(mismatch_help(lt, rt, c.rhs)),
            );
            return None;
        }
        if ordering && matches!(lt, Ty::Str | Ty::Bool | Ty::Nothing) {
            self.push(
                Diagnostic::new(
                    Code::TypeMismatch,
                    c.op.span,
                    format!("type mismatch: {} cannot be ordered", lt.describe()),
                )
                .label(format!("`{}` needs numbers, durations, percentages or amounts", op.as_str()))
                .help("use `==`, `!=`, `in` or `starts_with` for strings"),
            );
            return None;
        }
        if let (Operand::Fact(Fact::TimeWeekday), Operand::Lit(Lit::Str(s)))
        | (Operand::Lit(Lit::Str(s)), Operand::Fact(Fact::TimeWeekday)) = (&lo, &ro)
        {
            if !names::WEEKDAYS.contains(&s.as_str()) {
                self.push(
                    Diagnostic::new(Code::BadValue, c.rhs.span, format!("`{s}` is not a weekday"))
                        .label("never equals `time.weekday`")
                        .help("weekdays are \"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\" and \"sun\""),
                );
                return None;
            }
        }
        if let (Operand::Fact(Fact::TimeHour), Operand::Lit(Lit::Num(n)))
        | (Operand::Lit(Lit::Num(n)), Operand::Fact(Fact::TimeHour)) = (&lo, &ro)
        {
            if matches!(op, CmpOp::Eq | CmpOp::Ne) && !is_hour(*n) {
                self.push(
                    Diagnostic::new(Code::BadValue, c.rhs.span, format!("`{n}` is not an hour"))
                        .label("never equals `time.hour`")
                        .help("`time.hour` is a whole number from 0 to 23 (UTC)"),
                );
                return None;
            }
        }
        let rel = match op {
            CmpOp::Eq => Rel::Eq,
            CmpOp::Ne => Rel::Ne,
            CmpOp::Lt => Rel::Lt,
            CmpOp::Le => Rel::Le,
            CmpOp::Gt => Rel::Gt,
            _ => Rel::Ge,
        };
        Some(fold_cmp(lo, rel, ro, c.label.clone()))
    }

    /// `in` and `not in`: a fact on the left, a list of literals of its type on the right.
    fn membership(&mut self, c: &Comparison<'_>, l: &Typed, r: Typed) -> Option<Cond> {
        let Typed::Fact(fact, ty) = l else {
            self.mismatch_side(c.lhs.span, l, "the left side of `in` must be a fact");
            return None;
        };
        let Typed::List(items) = r else {
            self.mismatch_side(c.rhs.span, &r, "the right side of `in` must be a list");
            return None;
        };
        let mut list = Vec::new();
        for (lit, t, sp) in items {
            if t != *ty && t != Ty::Nothing {
                self.push(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        sp,
                        format!("type mismatch: the list holds {}, the fact is {}", t.describe(), ty.describe()),
                    )
                    .label("this item"),
                );
                return None;
            }
            let bad = match (fact, &lit) {
                (Fact::TimeWeekday, Lit::Str(d)) if !names::WEEKDAYS.contains(&d.as_str()) => {
                    Some(format!("`{d}` is not a weekday"))
                }
                (Fact::TimeHour, Lit::Num(n)) if !is_hour(*n) => Some(format!("`{n}` is not an hour")),
                _ => None,
            };
            if let Some(why) = bad {
                self.push(
                    Diagnostic::new(Code::BadValue, sp, why)
                        .label("no request has this value")
                        .help("weekdays are \"mon\" to \"sun\"; hours are whole numbers from 0 to 23 (UTC)"),
                );
                return None;
            }
            list.push(lit);
        }
        Some(Cond::In { fact: fact.clone(), list, negate: c.op.node == CmpOp::NotIn, label: c.label.clone() })
    }

    /// `contains`, `contains any`, `contains all` and `starts_with`: a text fact on the left,
    /// non-empty strings on the right.
    fn text(&mut self, c: &Comparison<'_>, l: &Typed, r: Typed) -> Option<Cond> {
        let op = c.op.node;
        let Typed::Fact(fact, Ty::Str) = l else {
            self.mismatch_side(c.lhs.span, l, &format!("`{}` searches text", op.as_str()));
            return None;
        };
        let needles: Vec<String> = match (op, r) {
            (CmpOp::Contains | CmpOp::StartsWith, Typed::Lit(Lit::Str(s), _)) => vec![s],
            (CmpOp::Contains | CmpOp::StartsWith, Typed::List(_)) => {
                self.push(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        c.rhs.span,
                        format!("type mismatch: `{}` takes one string", op.as_str()),
                    )
                    .label("this is a list")
                    .help("use `contains any` or `contains all` with a list"),
                );
                return None;
            }
            (CmpOp::ContainsAny | CmpOp::ContainsAll, Typed::List(items)) => self.keywords(items)?,
            (CmpOp::ContainsAny | CmpOp::ContainsAll, Typed::Lit(Lit::Str(s), _)) => vec![s],
            (_, other) => {
                self.mismatch_side(c.rhs.span, &other, &format!("`{}` takes literal strings", op.as_str()));
                return None;
            }
        };
        if needles.iter().any(String::is_empty) {
            self.push(
                Diagnostic::new(Code::BadValue, c.rhs.span, "an empty keyword matches every text")
                    .label("empty string")
                    .help("remove it"),
            );
            return None;
        }
        let op = match op {
            CmpOp::ContainsAll => TextOp::ContainsAll,
            CmpOp::StartsWith => TextOp::StartsWith,
            _ => TextOp::ContainsAny,
        };
        if needles.is_empty() {
            return Some(Cond::Const(op == TextOp::ContainsAll));
        }
        Some(Cond::Text { fact: fact.clone(), op, needles, label: c.label.clone() })
    }

    /// The strings of a keyword list (every item must be one).
    fn keywords(&mut self, items: Vec<(Lit, Ty, Span)>) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for (lit, _, sp) in items {
            match lit {
                Lit::Str(s) => out.push(s),
                _ => {
                    self.push(
                        Diagnostic::new(Code::TypeMismatch, sp, "type mismatch: keywords must be strings")
                            .label("not a string"),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }
}

/// The pieces of one comparison as written: where it is, its sides and operator, its text.
struct Comparison<'a> {
    span: Span,
    lhs: &'a Spanned<Value>,
    op: &'a Spanned<CmpOp>,
    rhs: &'a Spanned<Value>,
    label: String,
}

/// Builds a comparison, folding it when both sides are literals or the fact cannot be `none`.
pub(super) fn fold_cmp(lhs: Operand, rel: Rel, rhs: Operand, label: String) -> Cond {
    match (&lhs, &rhs) {
        (Operand::Lit(a), Operand::Lit(b)) => Cond::Const(crate::policy::ir::value::compare_lits(a, rel, b)),
        (Operand::Fact(f), Operand::Lit(Lit::None)) | (Operand::Lit(Lit::None), Operand::Fact(f)) if !f.nullable() => {
            Cond::Const(rel == Rel::Ne)
        }
        _ => Cond::Cmp { lhs, rel, rhs, label },
    }
}

/// A value `time.hour` can have.
fn is_hour(n: f64) -> bool {
    (0.0..=23.0).contains(&n) && n.fract() == 0.0
}
