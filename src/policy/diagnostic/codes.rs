//! The registry of diagnostic codes. Codes are stable: never reuse or renumber one.
//!
//! Ranges: E01xx syntax, E02xx name resolution, E03xx types and values, E04xx routing semantics,
//! W01xx lints (warnings), A01xx advice (`lint --costs`). Every code is documented in
//! `docs/diagnostics.md` and has a golden test in `tests/lint/`.

use super::Severity;

/// A diagnostic code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum Code {
    /// The text does not parse.
    SyntaxError = 101,
    /// A literal is malformed (an escape, a number out of range).
    BadLiteral = 102,
    /// The file is too large or too deeply nested to parse safely.
    TooComplex = 103,
    /// A policy file cannot be read.
    UnreadableFile = 104,
    /// A model that the catalog does not have.
    UnknownModel = 201,
    /// A fact that does not exist (`prompt.token`).
    UnknownFact = 202,
    /// A function that does not exist.
    UnknownFunction = 203,
    /// A bare name that is neither a fact nor a `let` name.
    UnknownName = 204,
    /// A `with (...)` field that is not a request field.
    UnknownField = 205,
    /// A rule option that does not exist.
    UnknownOption = 206,
    /// A `let` name defined twice.
    DuplicateLet = 207,
    /// Two sides of a comparison that cannot be compared.
    TypeMismatch = 301,
    /// A regex that does not compile.
    InvalidRegex = 302,
    /// A function called with the wrong arguments.
    BadArguments = 303,
    /// A value out of range (a `deny` status, `retries`, an override).
    BadValue = 304,
    /// Split weights that do not add up to 100%.
    SplitWeights = 401,
    /// Two rules with the same name.
    DuplicateRule = 402,
    /// No `default`.
    MissingDefault = 403,
    /// Files that include each other.
    IncludeCycle = 404,
    /// More than one `default`.
    DuplicateDefault = 405,
    /// A target outside the rule's `only` set.
    OnlyViolation = 406,
    /// A pick over a set that holds no model for the endpoint.
    EmptySet = 407,
    /// A model that cannot serve the rule's endpoint (a chat rule naming an embedding model).
    WrongEndpoint = 408,
    /// A rule that an earlier rule always catches.
    UnreachableRule = 10101,
    /// A catalog model that no rule can route to.
    UnusedModel = 10102,
    /// `cheapest` over models without a price.
    UnpricedModel = 10103,
    /// A condition that always holds.
    AlwaysTrue = 10104,
    /// A condition that never holds.
    AlwaysFalse = 10105,
    /// A chain that names a model twice.
    RepeatedModel = 10106,
    /// A chain that falls back to a model whose context is smaller than the rule's token guard.
    SmallContext = 10107,
    /// A chain model that lacks a capability the rule requires.
    MissingCapability = 10108,
    /// A `let` that nothing uses.
    UnusedLet = 10109,
    /// The worst-case cost of a rule (`lint --costs`).
    WorstCaseCost = 20101,
}

impl Code {
    /// Every code, for documentation and tests.
    pub const ALL: &'static [Code] = &[
        Code::SyntaxError,
        Code::BadLiteral,
        Code::TooComplex,
        Code::UnreadableFile,
        Code::UnknownModel,
        Code::UnknownFact,
        Code::UnknownFunction,
        Code::UnknownName,
        Code::UnknownField,
        Code::UnknownOption,
        Code::DuplicateLet,
        Code::TypeMismatch,
        Code::InvalidRegex,
        Code::BadArguments,
        Code::BadValue,
        Code::SplitWeights,
        Code::DuplicateRule,
        Code::MissingDefault,
        Code::IncludeCycle,
        Code::DuplicateDefault,
        Code::OnlyViolation,
        Code::EmptySet,
        Code::WrongEndpoint,
        Code::UnreachableRule,
        Code::UnusedModel,
        Code::UnpricedModel,
        Code::AlwaysTrue,
        Code::AlwaysFalse,
        Code::RepeatedModel,
        Code::SmallContext,
        Code::MissingCapability,
        Code::UnusedLet,
        Code::WorstCaseCost,
    ];

    /// The code as printed: `E0201`, `W0104`, `A0101`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::SyntaxError => "E0101",
            Code::BadLiteral => "E0102",
            Code::TooComplex => "E0103",
            Code::UnreadableFile => "E0104",
            Code::UnknownModel => "E0201",
            Code::UnknownFact => "E0202",
            Code::UnknownFunction => "E0203",
            Code::UnknownName => "E0204",
            Code::UnknownField => "E0205",
            Code::UnknownOption => "E0206",
            Code::DuplicateLet => "E0207",
            Code::TypeMismatch => "E0301",
            Code::InvalidRegex => "E0302",
            Code::BadArguments => "E0303",
            Code::BadValue => "E0304",
            Code::SplitWeights => "E0401",
            Code::DuplicateRule => "E0402",
            Code::MissingDefault => "E0403",
            Code::IncludeCycle => "E0404",
            Code::DuplicateDefault => "E0405",
            Code::OnlyViolation => "E0406",
            Code::EmptySet => "E0407",
            Code::WrongEndpoint => "E0408",
            Code::UnreachableRule => "W0101",
            Code::UnusedModel => "W0102",
            Code::UnpricedModel => "W0103",
            Code::AlwaysTrue => "W0104",
            Code::AlwaysFalse => "W0105",
            Code::RepeatedModel => "W0106",
            Code::SmallContext => "W0107",
            Code::MissingCapability => "W0108",
            Code::UnusedLet => "W0109",
            Code::WorstCaseCost => "A0101",
        }
    }

    /// A short name, used for golden file names.
    pub fn slug(self) -> &'static str {
        match self {
            Code::SyntaxError => "syntax_error",
            Code::BadLiteral => "bad_literal",
            Code::TooComplex => "too_complex",
            Code::UnreadableFile => "unreadable_file",
            Code::UnknownModel => "unknown_model",
            Code::UnknownFact => "unknown_fact",
            Code::UnknownFunction => "unknown_function",
            Code::UnknownName => "unknown_name",
            Code::UnknownField => "unknown_field",
            Code::UnknownOption => "unknown_option",
            Code::DuplicateLet => "duplicate_let",
            Code::TypeMismatch => "type_mismatch",
            Code::InvalidRegex => "invalid_regex",
            Code::BadArguments => "bad_arguments",
            Code::BadValue => "bad_value",
            Code::SplitWeights => "split_weights",
            Code::DuplicateRule => "duplicate_rule",
            Code::MissingDefault => "missing_default",
            Code::IncludeCycle => "include_cycle",
            Code::DuplicateDefault => "duplicate_default",
            Code::OnlyViolation => "only_violation",
            Code::EmptySet => "empty_set",
            Code::WrongEndpoint => "wrong_endpoint",
            Code::UnreachableRule => "unreachable_rule",
            Code::UnusedModel => "unused_model",
            Code::UnpricedModel => "unpriced_model",
            Code::AlwaysTrue => "always_true",
            Code::AlwaysFalse => "always_false",
            Code::RepeatedModel => "repeated_model",
            Code::SmallContext => "small_context",
            Code::MissingCapability => "missing_capability",
            Code::UnusedLet => "unused_let",
            Code::WorstCaseCost => "worst_case_cost",
        }
    }

    /// Errors stop a policy from loading; warnings do not.
    pub fn severity(self) -> Severity {
        match self as u16 {
            0..=9999 => Severity::Error,
            10000..=19999 => Severity::Warning,
            _ => Severity::Advice,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique() {
        let mut strs = HashSet::new();
        let mut nums = HashSet::new();
        for c in Code::ALL {
            // The exhaustive match in `as_str` guarantees every variant has a string; ALL must list
            // every variant once.
            assert!(strs.insert(c.as_str()), "duplicate code string {}", c.as_str());
            assert!(nums.insert(*c as u16), "duplicate discriminant {}", *c as u16);
            let prefix = match c.severity() {
                Severity::Error => 'E',
                Severity::Warning => 'W',
                Severity::Advice => 'A',
            };
            assert!(c.as_str().starts_with(prefix));
        }
        assert_eq!(strs.len(), Code::ALL.len());
    }
}
