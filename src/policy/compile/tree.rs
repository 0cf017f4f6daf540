//! The decision program's nodes. Flat and inspectable: leaves keep the condition's text (for
//! `explain` and logs), keyword and regex tests refer to slots of the shared automaton and sets.

use regex::Regex;

use crate::policy::ir::{Fact, Lit, Rel, TextOp};

/// Which prompt text a scan covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Src {
    /// `prompt`.
    Prompt = 0,
    /// `prompt.last`.
    Last = 1,
    /// `prompt.system`.
    System = 2,
}

impl Src {
    /// The scan of a prompt text fact.
    pub fn of(f: &Fact) -> Option<Src> {
        match f {
            Fact::Prompt => Some(Src::Prompt),
            Fact::PromptLast => Some(Src::Last),
            Fact::PromptSystem => Some(Src::System),
            _ => None,
        }
    }
}

/// One side of a compiled comparison.
#[derive(Clone, Debug, PartialEq)]
pub enum COperand {
    /// A fact other than the token count.
    Fact(Fact),
    /// `prompt.tokens`, lazily counted.
    Tokens,
    /// A literal.
    Lit(Lit),
}

/// A compiled condition.
#[derive(Debug)]
pub enum CCond {
    /// A constant.
    Const(bool),
    /// All hold.
    And(Box<[CCond]>),
    /// One holds.
    Or(Box<[CCond]>),
    /// Does not hold.
    Not(Box<CCond>),
    /// A named `let` condition.
    Named(usize, Box<CCond>),
    /// A boolean fact.
    Truthy(Fact, Box<str>),
    /// A comparison.
    Cmp(COperand, Rel, COperand, Box<str>),
    /// Membership.
    In(Fact, Box<[Lit]>, bool, Box<str>),
    /// Keywords on a prompt text: automaton pattern ids and regex-set slots.
    Kw {
        /// The text.
        src: Src,
        /// Automaton patterns (ASCII keywords).
        ids: Box<[u32]>,
        /// Regex-set slots (keywords with non-ASCII letters).
        res: Box<[u32]>,
        /// `contains all`.
        all: bool,
        /// The text of the condition.
        label: Box<str>,
    },
    /// A regex on a prompt text: a slot of that text's set.
    Re {
        /// The text.
        src: Src,
        /// The slot.
        slot: u32,
        /// The text of the condition.
        label: Box<str>,
    },
    /// Keywords on a short fact (a header, `request.model`), or `starts_with`, tested directly.
    DirectText {
        /// The fact.
        fact: Fact,
        /// The operator.
        op: TextOp,
        /// ASCII keywords.
        ascii: Box<[Box<str>]>,
        /// Non-ASCII keywords as case-insensitive regexes.
        regexes: Box<[Regex]>,
        /// The text of the condition.
        label: Box<str>,
    },
    /// A regex on a short fact.
    DirectRe(Fact, Box<Regex>, Box<str>),
}

impl PartialEq for CCond {
    fn eq(&self, other: &CCond) -> bool {
        match (self, other) {
            (CCond::Const(a), CCond::Const(b)) => a == b,
            _ => false,
        }
    }
}

/// A string fact that the hot loop reads directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrSlot {
    /// `user.tier`.
    Tier,
    /// `user.name`.
    Name,
    /// `user.id`.
    UserId,
    /// `request.model`.
    Model,
    /// `request.endpoint`.
    Endpoint,
    /// `request.api`.
    Api,
}

impl StrSlot {
    /// The slot of a fact, when it has one.
    pub fn of(f: &Fact) -> Option<StrSlot> {
        Some(match f {
            Fact::UserTier => StrSlot::Tier,
            Fact::UserName => StrSlot::Name,
            Fact::UserId => StrSlot::UserId,
            Fact::RequestModel => StrSlot::Model,
            Fact::RequestEndpoint => StrSlot::Endpoint,
            Fact::RequestApi => StrSlot::Api,
            _ => return None,
        })
    }
}

/// A rule's condition in the compact form the decision loop walks: the common single-test
/// shapes inline (24 bytes), everything else through the full tree (`General`). It keeps the
/// loop over a thousand rules inside the cache.
#[derive(Debug)]
pub enum Fast {
    /// A constant.
    Const(bool),
    /// `fact == "value"` (or `!=` with `ne`).
    StrEq {
        /// The fact.
        slot: StrSlot,
        /// `!=`.
        ne: bool,
        /// The literal.
        value: Box<str>,
    },
    /// `prompt.tokens REL n`.
    Tokens {
        /// The operator.
        rel: Rel,
        /// The bound.
        n: f64,
    },
    /// ASCII keywords on a prompt text.
    Kw {
        /// The text.
        src: Src,
        /// `contains all`.
        all: bool,
        /// Automaton patterns.
        ids: Box<[u32]>,
    },
    /// A regex-set slot.
    Re {
        /// The text.
        src: Src,
        /// The slot.
        slot: u32,
    },
    /// Anything else: evaluate the full tree.
    General,
}

impl Fast {
    /// The compact form of a condition.
    pub fn of(c: &CCond) -> Fast {
        match c {
            CCond::Const(b) => Fast::Const(*b),
            CCond::Cmp(COperand::Fact(f), rel @ (Rel::Eq | Rel::Ne), COperand::Lit(Lit::Str(s)), _) => {
                match StrSlot::of(f) {
                    Some(slot) => Fast::StrEq { slot, ne: *rel == Rel::Ne, value: s.as_str().into() },
                    None => Fast::General,
                }
            }
            CCond::Cmp(COperand::Tokens, rel, COperand::Lit(Lit::Num(n)), _) => Fast::Tokens { rel: *rel, n: *n },
            CCond::Kw { src, ids, res, all, .. } if res.is_empty() => {
                Fast::Kw { src: *src, all: *all, ids: ids.clone() }
            }
            CCond::Re { src, slot, .. } => Fast::Re { src: *src, slot: *slot },
            _ => Fast::General,
        }
    }
}
