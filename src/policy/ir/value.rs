//! Value semantics shared by the checker (constant folding), the compiler and the evaluators:
//! input literals and fact values, output the truth of a comparison or a text match. `none`
//! equals only `none`; ordering, `in`, `contains`, `starts_with` and `matches` on it are false.
//! Text matching folds case without copying the text, and split arms come from a stable hash.

use super::{Lit, Rel};

/// A fact's value at run time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum V<'a> {
    /// Absent.
    None,
    /// A boolean.
    Bool(bool),
    /// A number.
    Num(f64),
    /// A string.
    Str(&'a str),
}

impl V<'_> {
    /// For `explain`.
    pub fn display(&self) -> String {
        match self {
            V::None => "none".into(),
            V::Bool(b) => b.to_string(),
            V::Num(n) => {
                if n.fract() == 0.0 && n.abs() < 1e15 {
                    format!("{}", *n as i64)
                } else {
                    format!("{n}")
                }
            }
            V::Str(s) => format!("{s:?}"),
        }
    }
}

/// The value of a literal.
pub fn lit_value(l: &Lit) -> V<'_> {
    match l {
        Lit::None => V::None,
        Lit::Bool(b) => V::Bool(*b),
        Lit::Num(n) => V::Num(*n),
        Lit::Str(s) => V::Str(s),
    }
}

/// `a REL b` on run-time values. `none` equals only `none`; ordering involving `none` is false.
pub fn compare(a: V<'_>, rel: Rel, b: V<'_>) -> bool {
    let eq = match (a, b) {
        (V::None, V::None) => true,
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Num(x), V::Num(y)) => x == y,
        (V::Str(x), V::Str(y)) => x == y,
        _ => false,
    };
    match rel {
        Rel::Eq => eq,
        Rel::Ne => !eq,
        _ => match (a, b) {
            (V::Num(x), V::Num(y)) => match rel {
                Rel::Lt => x < y,
                Rel::Le => x <= y,
                Rel::Gt => x > y,
                _ => x >= y,
            },
            _ => false,
        },
    }
}

/// `a REL b` on literals (constant folding).
pub fn compare_lits(a: &Lit, rel: Rel, b: &Lit) -> bool {
    compare(lit_value(a), rel, lit_value(b))
}

/// Case-insensitive literal search. ASCII needles fold ASCII case; others use simple Unicode
/// case folding through a regex built by the caller (see [`needs_regex`]).
pub fn contains_ascii_ci(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// Case-insensitive ASCII prefix test.
pub fn starts_with_ascii_ci(hay: &str, needle: &str) -> bool {
    hay.as_bytes().get(..needle.len()).is_some_and(|p| p.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Whether a keyword needs the regex path (it has letters beyond ASCII).
pub fn needs_regex(needle: &str) -> bool {
    !needle.is_ascii()
}

/// The regex for a non-ASCII keyword: a case-insensitive literal, anchored for `starts_with`.
pub fn keyword_regex(needle: &str, anchored: bool) -> String {
    format!("(?i){}{}", if anchored { "^" } else { "" }, regex::escape(needle))
}

/// `prompt.tokens REL n` decided from the byte length alone, when it can be: a text of `b` bytes
/// has between `min(b, 1)` and `b` tokens.
pub fn tokens_by_length(bytes: usize, rel: Rel, n: f64) -> Option<bool> {
    let hi = bytes as f64;
    let lo = if bytes > 0 { 1.0 } else { 0.0 };
    match rel {
        Rel::Eq | Rel::Ne => {
            if n < lo || n > hi || n.fract() != 0.0 {
                Some(rel == Rel::Ne)
            } else {
                None
            }
        }
        _ => {
            let a = compare(V::Num(lo), rel, V::Num(n));
            let b = compare(V::Num(hi), rel, V::Num(n));
            (a == b).then_some(a)
        }
    }
}

/// FNV-1a: a stable hash for sticky splits (the same user lands on the same arm across restarts
/// and versions of Rust).
pub fn sticky_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // Finalise (splitmix64) so that the high bits depend on every input byte.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The arm of a split that a sticky key lands on.
pub fn split_arm(weights: impl Iterator<Item = f64>, key: &str, rule: &str) -> usize {
    let h = sticky_hash(&[rule, key]);
    let x = (h >> 11) as f64 / (1u64 << 53) as f64;
    let mut acc = 0.0;
    let mut last = 0;
    for (i, w) in weights.enumerate() {
        acc += w;
        last = i;
        if x < acc {
            return i;
        }
    }
    last
}
