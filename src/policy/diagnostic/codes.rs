//! The registry of diagnostic codes, generated from the one table below: each row gives the
//! printed code, the variant, its stable number and the short name of its golden files. Codes
//! are stable: never reuse or renumber one.
//!
//! Ranges: E01xx syntax, E02xx name resolution, E03xx types and values, E04xx routing semantics,
//! W01xx lints (warnings), A01xx advice (`lint --costs`). Every code is documented in
//! `docs/diagnostics.md` and has golden tests in `tests/lint/` (both checked by tests, over
//! [`Code::ALL`], which the table generates, so no code can be left out).

use super::Severity;

macro_rules! codes {
    ($( $(#[doc = $doc:literal])* $printed:ident $name:ident = $num:literal, $slug:literal; )*) => {
        /// A diagnostic code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum Code {
            $( $(#[doc = $doc])* $name = $num, )*
        }

        impl Code {
            /// Every code, in the table's order.
            pub const ALL: &'static [Code] = &[$(Code::$name),*];

            /// The code as printed: `E0201`, `W0104`, `A0101`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$name => stringify!($printed)),* }
            }

            /// A short name, used for golden file names.
            pub fn slug(self) -> &'static str {
                match self { $(Code::$name => $slug),* }
            }

            /// What the code means (its line in the table).
            pub fn summary(self) -> &'static str {
                match self { $(Code::$name => concat!($($doc),*).trim_ascii()),* }
            }
        }
    };
}

codes! {
    /// The text does not parse.
    E0101 SyntaxError = 101, "syntax_error";
    /// A literal is malformed (an escape, a number out of range).
    E0102 BadLiteral = 102, "bad_literal";
    /// The file is too large or too deeply nested to parse safely.
    E0103 TooComplex = 103, "too_complex";
    /// A policy file cannot be read.
    E0104 UnreadableFile = 104, "unreadable_file";
    /// A model that the catalog does not have.
    E0201 UnknownModel = 201, "unknown_model";
    /// A fact that does not exist (`prompt.token`).
    E0202 UnknownFact = 202, "unknown_fact";
    /// A function that does not exist.
    E0203 UnknownFunction = 203, "unknown_function";
    /// A bare name that is neither a fact nor a `let` name.
    E0204 UnknownName = 204, "unknown_name";
    /// A `with (...)` field that is not a request field.
    E0205 UnknownField = 205, "unknown_field";
    /// A rule option that does not exist.
    E0206 UnknownOption = 206, "unknown_option";
    /// A `let` name defined twice.
    E0207 DuplicateLet = 207, "duplicate_let";
    /// Two sides of a comparison that cannot be compared.
    E0301 TypeMismatch = 301, "type_mismatch";
    /// A regex that does not compile.
    E0302 InvalidRegex = 302, "invalid_regex";
    /// A function called with the wrong arguments.
    E0303 BadArguments = 303, "bad_arguments";
    /// A value out of range (a `deny` status, `retries`, an override).
    E0304 BadValue = 304, "bad_value";
    /// Split weights that do not add up to 100%.
    E0401 SplitWeights = 401, "split_weights";
    /// Two rules with the same name.
    E0402 DuplicateRule = 402, "duplicate_rule";
    /// No `default`.
    E0403 MissingDefault = 403, "missing_default";
    /// Files that include each other.
    E0404 IncludeCycle = 404, "include_cycle";
    /// More than one `default`.
    E0405 DuplicateDefault = 405, "duplicate_default";
    /// A target outside the rule's `only` set.
    E0406 OnlyViolation = 406, "only_violation";
    /// A pick over a set that holds no model for the endpoint.
    E0407 EmptySet = 407, "empty_set";
    /// A model that cannot serve the rule's endpoint (a chat rule naming an embedding model).
    E0408 WrongEndpoint = 408, "wrong_endpoint";
    /// `cache` on a rule that answers with a `deny`.
    E0409 CacheOnDeny = 409, "cache_on_deny";
    /// A rule that an earlier rule always catches.
    W0101 UnreachableRule = 10101, "unreachable_rule";
    /// A catalog model that no rule can route to.
    W0102 UnusedModel = 10102, "unused_model";
    /// `cheapest` over models without a price.
    W0103 UnpricedModel = 10103, "unpriced_model";
    /// A condition that always holds.
    W0104 AlwaysTrue = 10104, "always_true";
    /// A condition that never holds.
    W0105 AlwaysFalse = 10105, "always_false";
    /// A chain that names a model twice.
    W0106 RepeatedModel = 10106, "repeated_model";
    /// A chain that falls back to a model whose context is smaller than the rule's token guard.
    W0107 SmallContext = 10107, "small_context";
    /// A chain model that lacks a capability the rule requires.
    W0108 MissingCapability = 10108, "missing_capability";
    /// A `let` that nothing uses.
    W0109 UnusedLet = 10109, "unused_let";
    /// A semantic cache whose threshold is under 80% (false hits).
    W0110 LowSimilarity = 10110, "low_similarity";
    /// `cache` on a rule with a `split` (a cached arm skews the experiment).
    W0111 CacheWithSplit = 10111, "cache_with_split";
    /// The worst-case cost of a rule (`lint --costs`).
    A0101 WorstCaseCost = 20101, "worst_case_cost";
}

impl Code {
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
    fn codes_are_unique_and_printed_from_their_number() {
        let mut strs = HashSet::new();
        let mut slugs = HashSet::new();
        for c in Code::ALL {
            assert!(strs.insert(c.as_str()), "duplicate code string {}", c.as_str());
            assert!(slugs.insert(c.slug()), "duplicate slug {}", c.slug());
            let prefix = match c.severity() {
                Severity::Error => 'E',
                Severity::Warning => 'W',
                Severity::Advice => 'A',
            };
            assert_eq!(c.as_str(), format!("{prefix}{:04}", *c as u16 % 10000), "{c:?}");
            assert!(!c.summary().is_empty());
        }
    }
}
