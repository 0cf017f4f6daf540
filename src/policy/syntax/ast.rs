//! The syntax tree: owned nodes, each wrapped in [`Spanned`]. Produced by `parser.rs`, read by the
//! checker and the formatter. Nothing here is resolved: a [`Value::Name`] may be a fact, a `let`
//! name or a model.

pub use super::span::{Span, Spanned};

/// One parsed file.
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    /// The declarations, in order.
    pub items: Vec<Item>,
    /// Every comment in the file, in order (kept for `fmt`).
    pub comments: Vec<Spanned<String>>,
}

/// A top-level declaration.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `let name = ...`
    Let(Spanned<Let>),
    /// `include "file"`
    Include(Spanned<String>),
    /// `rule "name" { ... }`
    Rule(Spanned<Rule>),
    /// `default { ... }`
    Default(Spanned<Default>),
}

impl Item {
    /// The span of the whole declaration.
    pub fn span(&self) -> Span {
        match self {
            Item::Let(x) => x.span,
            Item::Include(x) => x.span,
            Item::Rule(x) => x.span,
            Item::Default(x) => x.span,
        }
    }
}

/// `let name = expr`.
#[derive(Clone, Debug, PartialEq)]
pub struct Let {
    /// The name.
    pub name: Spanned<String>,
    /// A value or a condition.
    pub value: Spanned<Expr>,
}

/// `rule "name" { when ... then ... options }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// The rule's name.
    pub name: Spanned<String>,
    /// Its condition.
    pub when: Spanned<Expr>,
    /// The whole `when ...` clause.
    pub when_span: Span,
    /// Its target (the span covers `then ...`).
    pub then: Spanned<Target>,
    /// `retries`, `timeout`, `cache`, `tag`, `only`.
    pub options: Vec<Spanned<RuleOption>>,
    /// The closing brace (for comments placed before it).
    pub close: Span,
}

/// `default { then ... options }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Default {
    /// Its target.
    pub then: Spanned<Target>,
    /// Options, as for rules.
    pub options: Vec<Spanned<RuleOption>>,
    /// The closing brace.
    pub close: Span,
}

/// `NAME VALUE, ...` inside a rule.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleOption {
    /// The option's name.
    pub name: Spanned<String>,
    /// Its values.
    pub values: Vec<Spanned<Value>>,
    /// `cache`'s `shared` or `similar PCT using MODEL`.
    pub mode: Option<Spanned<CacheMode>>,
}

/// How `cache` matches and shares.
#[derive(Clone, Debug, PartialEq)]
pub enum CacheMode {
    /// `shared`: between the keys of the same tier.
    Shared,
    /// `similar PCT using MODEL`: a close enough last user message.
    Similar {
        /// The cosine similarity threshold, as a fraction.
        threshold: f64,
        /// The percentage as written (`95%`).
        raw: String,
        /// The embeddings model.
        model: Spanned<String>,
    },
}

/// A condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// `a or b or c` (two or more terms).
    Or(Vec<Spanned<Expr>>),
    /// `a and b and c` (two or more terms).
    And(Vec<Spanned<Expr>>),
    /// `not a`
    Not(Box<Spanned<Expr>>),
    /// `lhs OP rhs`
    Compare {
        /// Left side.
        lhs: Spanned<Value>,
        /// Operator.
        op: Spanned<CmpOp>,
        /// Right side.
        rhs: Spanned<Value>,
    },
    /// `lhs matches /re/i`
    Matches {
        /// The text searched.
        lhs: Spanned<Value>,
        /// The regex.
        regex: Spanned<RegexLit>,
    },
    /// A bare value: a boolean fact, a `let` name, a literal.
    Value(Spanned<Value>),
    /// `( expr )`, kept so that `fmt` keeps the author's grouping.
    Paren(Box<Spanned<Expr>>),
}

/// A regex literal.
#[derive(Clone, Debug, PartialEq)]
pub struct RegexLit {
    /// The pattern, with `\/` already turned into `/`.
    pub pattern: String,
    /// The `i` flag.
    pub insensitive: bool,
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `in`
    In,
    /// `not in`
    NotIn,
    /// `contains`
    Contains,
    /// `contains any`
    ContainsAny,
    /// `contains all`
    ContainsAll,
    /// `starts_with`
    StartsWith,
}

impl CmpOp {
    /// How the operator is written.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::In => "in",
            CmpOp::NotIn => "not in",
            CmpOp::Contains => "contains",
            CmpOp::ContainsAny => "contains any",
            CmpOp::ContainsAll => "contains all",
            CmpOp::StartsWith => "starts_with",
        }
    }
}

/// A value in a condition, an option or an override.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `"text"`
    Str(String),
    /// `3`, `100k` (the value, and the text as written).
    Num(f64, String),
    /// `10%` as the fraction 0.10 (and the text as written).
    Percent(f64, String),
    /// `$5` (and the text as written).
    Dollars(f64, String),
    /// `250ms` in milliseconds (and the text as written).
    Duration(u64, String),
    /// `true` / `false`
    Bool(bool),
    /// `none`
    None,
    /// `[a, b]`
    List(Vec<Spanned<Value>>),
    /// A bare name: a fact, a `let` name or a model.
    Name(String),
    /// `f(args)`
    Call(Spanned<String>, Vec<Spanned<Value>>),
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// `a -> b -> c` (two or more steps).
    Chain(Vec<Spanned<Target>>),
    /// A catalog model, optionally `with (...)` overrides.
    Model {
        /// The model's name.
        name: Spanned<String>,
        /// Whether it was written in quotes.
        quoted: bool,
        /// Overrides.
        with: Vec<WithField>,
    },
    /// The model the client named.
    Requested {
        /// Overrides.
        with: Vec<WithField>,
    },
    /// `cheapest(SET)` / `fastest(SET)`.
    Pick {
        /// Which pick.
        kind: PickKind,
        /// The set, as written.
        set: Vec<Spanned<Value>>,
    },
    /// `split { W%: T, ... }`.
    Split(Vec<SplitArm>),
    /// `deny [STATUS] "message"`.
    Deny {
        /// The status, when given.
        status: Option<Spanned<u16>>,
        /// The message.
        message: String,
    },
}

/// `field: value` inside `with (...)`.
#[derive(Clone, Debug, PartialEq)]
pub struct WithField {
    /// The request field.
    pub name: Spanned<String>,
    /// Its value.
    pub value: Spanned<Value>,
}

/// One arm of a split.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitArm {
    /// The weight as a fraction (0.9 for `90%`), and the text as written.
    pub weight: Spanned<(f64, String)>,
    /// Where that share goes.
    pub target: Spanned<Target>,
}

/// `cheapest` or `fastest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PickKind {
    /// Lowest input plus output price first.
    Cheapest,
    /// Lowest observed time to first byte first.
    Fastest,
}

impl PickKind {
    /// How it is written.
    pub fn as_str(self) -> &'static str {
        match self {
            PickKind::Cheapest => "cheapest",
            PickKind::Fastest => "fastest",
        }
    }
}
