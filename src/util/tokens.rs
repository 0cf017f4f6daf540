//! Token counting: input a text, output its o200k token count (`bpe-openai`). The policy's
//! `prompt.tokens` and accounting's counted usage both use this one counter, so the two agree.

/// Counts o200k tokens.
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    bpe_openai::o200k_base().count(text) as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_o200k_tokens() {
        assert_eq!(super::count(""), 0);
        assert_eq!(super::count("hello world"), 2);
    }
}
