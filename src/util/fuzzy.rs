//! Fuzzy matching of names: input is a misspelt name and the names it could have meant, output
//! the closest one within a small edit distance.

/// The closest name within edit distance 2 (or a third of the name's length).
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| *d <= limit && *c != name)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_name_within_reach() {
        assert_eq!(did_you_mean("codestrall", ["codestral", "gpt-4o"]), Some("codestral"));
        assert_eq!(did_you_mean("prompt.token", ["prompt.tokens", "prompt"]), Some("prompt.tokens"));
        assert_eq!(did_you_mean("zzz", ["codestral"]), None);
        // The name itself is not a suggestion.
        assert_eq!(did_you_mean("gpt-4o", ["gpt-4o"]), None);
    }
}
