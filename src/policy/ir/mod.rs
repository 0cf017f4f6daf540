//! The checked policy: names resolved, types known, literals normalised. Produced by the checker,
//! read by the compiler, by the naive evaluator (the reference that the compiled program is tested
//! against) and by the lints.

pub mod names;
pub mod value;

use std::sync::Arc;

use crate::catalog::{Catalog, ModelId};
pub use crate::policy::syntax::ast::PickKind;
use crate::policy::syntax::span::{SourceMap, Span};

/// A checked policy.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The rules in order; the default is last and always present.
    pub rules: Vec<RuleIr>,
    /// Named conditions (`let x = <condition>`), for `explain`.
    pub lets: Vec<String>,
    /// The sources that spans point into.
    pub sources: Arc<SourceMap>,
    /// The catalog the policy was checked against.
    pub catalog: Arc<Catalog>,
    /// First 12 hex digits of SHA-256 over the files in include order.
    pub version: String,
}

/// One rule (or the default).
#[derive(Clone, Debug, PartialEq)]
pub struct RuleIr {
    /// Its name (`default` for the default).
    pub name: String,
    /// The span of the rule's name (or of `default`).
    pub span: Span,
    /// Whether this is the default.
    pub is_default: bool,
    /// Its condition (`Const(true)` for the default).
    pub cond: Cond,
    /// The span of `when ...`.
    pub cond_span: Span,
    /// Its target.
    pub target: TargetIr,
    /// The span of `then ...`.
    pub target_span: Span,
    /// Options.
    pub options: RuleOptions,
}

/// `retries`, `timeout`, `cache`, `tag`, `only`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleOptions {
    /// Retries per target (default 0).
    pub retries: u32,
    /// Timeout to the first byte, per attempt.
    pub timeout_ms: Option<u64>,
    /// `cache`: the response cache of the rule.
    pub cache: Option<CacheIr>,
    /// Metrics label.
    pub tag: Option<String>,
    /// Every target tried must be in this set.
    pub only: Option<SetIr>,
}

/// A rule's `cache` option (SPEC §10).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CacheIr {
    /// How long an entry lives, in ms.
    pub ttl_ms: u64,
    /// `shared`: entries are shared by the keys of one tier (else each key has its own).
    pub shared: bool,
    /// `similar PCT using MODEL`: a semantic cache.
    pub similar: Option<SimilarIr>,
    /// The `cache ...` clause, and its `shared` or `similar ...` part (for diagnostics).
    #[serde(skip)]
    pub span: Span,
    #[serde(skip)]
    pub mode_span: Option<Span>,
}

/// `similar PCT using MODEL`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SimilarIr {
    /// The cosine similarity from which an entry is a hit (a fraction).
    pub threshold: f64,
    /// The embeddings model.
    pub model: ModelId,
}

/// A fact a condition can read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fact {
    /// Text of all messages.
    Prompt,
    /// The last user message.
    PromptLast,
    /// The system messages.
    PromptSystem,
    /// o200k token count of `prompt`.
    PromptTokens,
    /// Characters of `prompt`.
    PromptChars,
    /// Number of messages.
    PromptMessages,
    /// The model the client named.
    RequestModel,
    /// `stream: true`.
    RequestStream,
    /// Tools offered.
    RequestTools,
    /// Images present.
    RequestImages,
    /// The client's `max_tokens` (or `max_completion_tokens`).
    RequestMaxTokens,
    /// `"chat"` or `"embeddings"`.
    RequestEndpoint,
    /// `"chat"`, `"responses"` or `"messages"`: the client API.
    RequestApi,
    /// The key's tier.
    UserTier,
    /// The key's name.
    UserName,
    /// OpenAI's `user` field.
    UserId,
    /// A request header (name lowercased).
    Header(String),
    /// A `metadata` entry.
    Metadata(String),
    /// Remaining budget as a fraction of the budget.
    BudgetRemainingFraction,
    /// Remaining budget in USD.
    BudgetRemainingUsd,
    /// Spend this period in USD.
    BudgetSpentUsd,
    /// Spend this period as a fraction of the budget.
    BudgetSpentFraction,
    /// The model's breaker is not open.
    Healthy(ModelId),
    /// Moving average of time to first byte, in ms.
    Latency(ModelId),
    /// UTC hour, 0 to 23.
    TimeHour,
    /// UTC weekday, `"mon"` to `"sun"`.
    TimeWeekday,
}

impl Fact {
    /// Whether the fact is one of the prompt texts (scanned by the keyword automaton).
    pub fn is_prompt_text(&self) -> bool {
        matches!(self, Fact::Prompt | Fact::PromptLast | Fact::PromptSystem)
    }

    /// The smallest and largest values a numeric fact can take (for range lints).
    pub fn domain(&self) -> (f64, f64) {
        match self {
            Fact::TimeHour => (0.0, 23.0),
            Fact::PromptTokens | Fact::PromptChars | Fact::PromptMessages | Fact::RequestMaxTokens => {
                (0.0, f64::INFINITY)
            }
            Fact::BudgetRemainingFraction | Fact::BudgetSpentFraction => (0.0, f64::INFINITY),
            Fact::BudgetRemainingUsd | Fact::BudgetSpentUsd | Fact::Latency(_) => (0.0, f64::INFINITY),
            _ => (f64::NEG_INFINITY, f64::INFINITY),
        }
    }

    /// Whether the fact can be `none`.
    pub fn nullable(&self) -> bool {
        matches!(
            self,
            Fact::RequestModel
                | Fact::RequestMaxTokens
                | Fact::UserTier
                | Fact::UserName
                | Fact::UserId
                | Fact::Header(_)
                | Fact::Metadata(_)
                | Fact::BudgetRemainingFraction
                | Fact::BudgetRemainingUsd
                | Fact::BudgetSpentFraction
                | Fact::Latency(_)
        )
    }
}

/// A literal after checking: percentages are fractions, dollars USD, durations milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    /// `none`.
    None,
    /// A boolean.
    Bool(bool),
    /// A number.
    Num(f64),
    /// A string.
    Str(String),
}

/// One side of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A fact.
    Fact(Fact),
    /// A literal.
    Lit(Lit),
}

/// An ordering or equality operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rel {
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
}

impl Rel {
    /// The operator with its sides swapped (`a < b` is `b > a`).
    pub fn flip(self) -> Rel {
        match self {
            Rel::Lt => Rel::Gt,
            Rel::Le => Rel::Ge,
            Rel::Gt => Rel::Lt,
            Rel::Ge => Rel::Le,
            other => other,
        }
    }
}

/// A text operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TextOp {
    /// Holds one of the needles (`contains`, `contains any`).
    ContainsAny,
    /// Holds every needle.
    ContainsAll,
    /// Begins with one of the needles.
    StartsWith,
}

/// A checked condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    /// Folded to a constant.
    Const(bool),
    /// All hold.
    And(Vec<Cond>),
    /// One holds.
    Or(Vec<Cond>),
    /// Does not hold.
    Not(Box<Cond>),
    /// A named `let` condition (index into [`Checked::lets`]).
    Named(usize, Box<Cond>),
    /// A bare boolean fact.
    Truthy {
        /// The fact.
        fact: Fact,
        /// The source text.
        label: String,
    },
    /// `lhs REL rhs`.
    Cmp {
        /// Left.
        lhs: Operand,
        /// Operator.
        rel: Rel,
        /// Right.
        rhs: Operand,
        /// The source text.
        label: String,
    },
    /// `fact in [..]` / `not in`.
    In {
        /// The fact.
        fact: Fact,
        /// The literals.
        list: Vec<Lit>,
        /// `not in`.
        negate: bool,
        /// The source text.
        label: String,
    },
    /// `contains`, `contains any`, `contains all`, `starts_with` (case-insensitive, literal).
    Text {
        /// The text searched.
        fact: Fact,
        /// The operator.
        op: TextOp,
        /// The keywords, as written.
        needles: Vec<String>,
        /// The source text.
        label: String,
    },
    /// `matches /re/`.
    Regex {
        /// The text searched.
        fact: Fact,
        /// The pattern (with `(?i)` already applied when the flag was given).
        pattern: String,
        /// The source text.
        label: String,
    },
}

/// A set of models for picks and `only`.
#[derive(Clone, Debug, PartialEq)]
pub struct SetIr {
    /// How it was written.
    pub kind: SetKind,
    /// The candidate models, in order (catalog order for `healthy` and `tagged`).
    pub models: Vec<ModelId>,
}

/// How a set was written.
#[derive(Clone, Debug, PartialEq)]
pub enum SetKind {
    /// A list of models.
    List,
    /// `healthy`: every model, filtered by health at dispatch.
    Healthy,
    /// `tagged("x")`.
    Tagged(String),
}

/// A checked target.
#[derive(Clone, Debug, PartialEq)]
pub enum TargetIr {
    /// A catalog model.
    Model {
        /// The model.
        model: ModelId,
        /// `with (...)` overrides.
        with: Overrides,
    },
    /// The model the client named.
    Requested {
        /// Overrides.
        with: Overrides,
    },
    /// `cheapest(SET)` / `fastest(SET)`.
    Pick {
        /// Which.
        kind: PickKind,
        /// Over what.
        set: SetIr,
    },
    /// Weighted arms (weights add up to 1).
    Split(Vec<(f64, TargetIr)>),
    /// Tried left to right.
    Chain(Vec<TargetIr>),
    /// A refusal.
    Deny {
        /// HTTP status.
        status: u16,
        /// Message.
        message: String,
    },
}

/// Request overrides: field name and JSON value.
pub type Overrides = Vec<(String, serde_json::Value)>;

impl TargetIr {
    /// Calls `f` on every model this target names explicitly (not `healthy`/`tagged` picks).
    pub fn explicit_models(&self, f: &mut impl FnMut(ModelId)) {
        match self {
            TargetIr::Model { model, .. } => f(*model),
            TargetIr::Pick { set, .. } if set.kind == SetKind::List => set.models.iter().copied().for_each(f),
            TargetIr::Split(arms) => arms.iter().for_each(|(_, t)| t.explicit_models(f)),
            TargetIr::Chain(steps) => steps.iter().for_each(|t| t.explicit_models(f)),
            _ => {}
        }
    }

    /// Calls `f` on every model this target may route to (sets included), and returns whether it
    /// may route to any model (`requested`).
    pub fn all_models(&self, f: &mut impl FnMut(ModelId)) -> bool {
        match self {
            TargetIr::Model { model, .. } => {
                f(*model);
                false
            }
            TargetIr::Pick { set, .. } => {
                set.models.iter().copied().for_each(f);
                false
            }
            TargetIr::Split(arms) => arms.iter().fold(false, |any, (_, t)| t.all_models(f) | any),
            TargetIr::Chain(steps) => steps.iter().fold(false, |any, t| t.all_models(f) | any),
            TargetIr::Requested { .. } => true,
            TargetIr::Deny { .. } => false,
        }
    }
}

impl Cond {
    /// The conjuncts of a condition (itself when it is not an `and`), looking through names.
    pub fn conjuncts(&self) -> Vec<&Cond> {
        match self {
            Cond::And(cs) => cs.iter().flat_map(Cond::conjuncts).collect(),
            Cond::Named(_, c) => c.conjuncts(),
            Cond::Const(true) => Vec::new(),
            other => vec![other],
        }
    }

    /// Whether any part of the condition reads `fact`.
    pub fn reads(&self, fact: &Fact) -> bool {
        self.reads_any(&|f| f == fact)
    }

    /// Whether any part of the condition reads a fact for which `pred` holds.
    pub fn reads_any(&self, pred: &dyn Fn(&Fact) -> bool) -> bool {
        match self {
            Cond::Const(_) => false,
            Cond::And(cs) | Cond::Or(cs) => cs.iter().any(|c| c.reads_any(pred)),
            Cond::Not(c) | Cond::Named(_, c) => c.reads_any(pred),
            Cond::Truthy { fact: f, .. }
            | Cond::In { fact: f, .. }
            | Cond::Text { fact: f, .. }
            | Cond::Regex { fact: f, .. } => pred(f),
            Cond::Cmp { lhs, rhs, .. } => {
                matches!(lhs, Operand::Fact(f) if pred(f)) || matches!(rhs, Operand::Fact(f) if pred(f))
            }
        }
    }
}
