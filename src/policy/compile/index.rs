//! The rules a decision settles in bulk, built once per program: equality on a key or request
//! string (a hash lookup), token bounds that the byte length rules out, and the keyword and regex
//! hits that the lazy scans record. Built here, read by `policy::eval`'s decision loop.

use std::collections::HashMap;

use super::tree::{Fast, Src, StrSlot};
use regex_automata::PatternSet;

use crate::policy::ir::Rel;

/// Value -> the `slot == value` rules that hold for it.
pub(crate) type EqTable = HashMap<Box<str>, Vec<u32>>;

/// Rules settled in bulk, and how.
#[derive(Default)]
pub(crate) struct Index {
    /// Rules evaluated one by one (a bitset over rule indices).
    pub(crate) general: Vec<u64>,
    /// `slot == "value"` rules: slot -> value -> rules.
    pub(crate) eq: Vec<(StrSlot, EqTable)>,
    /// `prompt.tokens > t` (or `>=`) rules, by `t`: possible only when the prompt has more bytes.
    pub(crate) tokens: Vec<(f64, bool, u32)>,
    /// The first keyword rule (scanning waits until a decision reaches it).
    pub(crate) kw_first: usize,
    /// Which texts keyword rules read.
    pub(crate) kw_srcs: [bool; 3],
    /// Automaton pattern -> the keyword rules it settles.
    pub(crate) kw_of_pattern: Vec<Vec<(u32, Src)>>,
    /// The first regex rule.
    pub(crate) re_first: usize,
    /// Text -> set slot -> the regex rules it settles.
    pub(crate) re_of_slot: [Vec<Vec<u32>>; 3],
    /// Per text: every regex of its set has prefix literals (so the set can be skipped).
    pub(crate) re_prefiltered: [bool; 3],
    /// Automaton pattern -> whether it is the prefix literal of some regex.
    pub(crate) literal_of_regex: Vec<bool>,
}

impl std::fmt::Debug for Index {
    /// Deterministic (tables sorted), with rule sets as rule indices.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let general: Vec<usize> = (0..self.general.len() * 64)
            .filter(|i| self.general.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0))
            .collect();
        let mut eq: Vec<(StrSlot, &str, &[u32])> =
            self.eq.iter().flat_map(|(s, t)| t.iter().map(move |(v, r)| (*s, &**v, r.as_slice()))).collect();
        eq.sort_by(|a, b| (format!("{:?}", a.0), a.1).cmp(&(format!("{:?}", b.0), b.1)));
        let first = |n: usize| (n != usize::MAX).then_some(n);
        f.debug_struct("Index")
            .field("evaluated_in_order", &general)
            .field("by_equality", &eq)
            .field("by_token_bound", &self.tokens)
            .field("first_keyword_rule", &first(self.kw_first))
            .field("keyword_rules_of_pattern", &self.kw_of_pattern)
            .field("first_regex_rule", &first(self.re_first))
            .field("regex_rules_of_slot", &self.re_of_slot)
            .field("regexes_prefiltered", &self.re_prefiltered)
            .finish()
    }
}

impl Index {
    pub(crate) fn new(fast: &[Fast], patterns: usize, regexes: &[Vec<String>; 3]) -> Index {
        let mut ix = Index {
            general: vec![0; fast.len().div_ceil(64)],
            kw_first: usize::MAX,
            re_first: usize::MAX,
            kw_of_pattern: vec![Vec::new(); patterns],
            re_of_slot: [0, 1, 2].map(|i| vec![Vec::new(); regexes.get(i).map_or(0, Vec::len)]),
            ..Index::default()
        };
        for (i, f) in fast.iter().enumerate() {
            let r = u32::try_from(i).unwrap_or(u32::MAX);
            match f {
                Fast::StrEq { slot, ne: false, value } => {
                    let pos = ix.eq.iter().position(|(s, _)| s == slot).unwrap_or_else(|| {
                        ix.eq.push((*slot, HashMap::new()));
                        ix.eq.len() - 1
                    });
                    if let Some((_, t)) = ix.eq.get_mut(pos) {
                        t.entry(value.clone()).or_default().push(r);
                    }
                }
                Fast::Tokens { rel: rel @ (Rel::Gt | Rel::Ge), n } => ix.tokens.push((*n, *rel == Rel::Ge, r)),
                Fast::Kw { src, all: false, ids } => {
                    ix.kw_first = ix.kw_first.min(i);
                    ix.kw_srcs[*src as usize] = true;
                    for id in ids.iter() {
                        if let Some(v) = ix.kw_of_pattern.get_mut(*id as usize) {
                            v.push((r, *src));
                        }
                    }
                }
                Fast::Re { src, slot } => {
                    ix.re_first = ix.re_first.min(i);
                    if let Some(v) = ix.re_of_slot.get_mut(*src as usize).and_then(|v| v.get_mut(*slot as usize)) {
                        v.push(r);
                    }
                }
                _ => set_bit(&mut ix.general, i),
            }
        }
        ix.tokens.sort_by(|a, b| a.0.total_cmp(&b.0));
        ix
    }
}

pub(crate) fn set_bit(bits: &mut [u64], i: usize) {
    if let Some(w) = bits.get_mut(i / 64) {
        *w |= 1 << (i % 64);
    }
}

/// The first set bit at or after `from`.
pub(crate) fn next_bit(bits: &[u64], from: usize) -> Option<usize> {
    let mut w = from / 64;
    let mut word = bits.get(w)? & (u64::MAX << (from % 64));
    loop {
        if word != 0 {
            return Some(w * 64 + word.trailing_zeros() as usize);
        }
        w += 1;
        word = *bits.get(w)?;
    }
}

pub(crate) fn set_hit(sets: &[Option<PatternSet>; 3], src: usize, slot: u32) -> bool {
    sets.get(src)
        .and_then(Option::as_ref)
        .and_then(|ps| regex_automata::PatternID::new(slot as usize).ok().map(|p| ps.contains(p)))
        .unwrap_or(false)
}
