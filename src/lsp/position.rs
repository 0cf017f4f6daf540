//! Byte offsets of a text <-> LSP positions (a line and a UTF-16 column).

use lsp_types::{Position, Range};

/// A text with the byte offset where each line starts.
pub struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    /// The lines of `text`.
    pub fn new(text: &'a str) -> Lines<'a> {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Lines { text, starts }
    }

    /// The position of byte `offset` (clamped to the text, and to a character boundary).
    pub fn position(&self, offset: u32) -> Position {
        let mut at = (offset as usize).min(self.text.len());
        while !self.text.is_char_boundary(at) {
            at -= 1;
        }
        let line = self.starts.partition_point(|s| *s <= at).saturating_sub(1);
        let column: usize = self.text[self.starts[line]..at].chars().map(char::len_utf16).sum();
        Position { line: u32::try_from(line).unwrap_or(u32::MAX), character: u32::try_from(column).unwrap_or(u32::MAX) }
    }

    /// The range of bytes `start..end`.
    pub fn range(&self, start: u32, end: u32) -> Range {
        Range { start: self.position(start), end: self.position(end) }
    }

    /// The byte offset of a position (clamped to its line).
    pub fn offset(&self, line: u32, character: u32) -> Option<usize> {
        let start = *self.starts.get(line as usize)?;
        let end = self.starts.get(line as usize + 1).map_or(self.text.len(), |e| e - 1);
        let mut units = 0;
        for (i, c) in self.text[start..end].char_indices() {
            if units >= character as usize {
                return Some(start + i);
            }
            units += c.len_utf16();
        }
        Some(end)
    }

    /// The word (letters, digits, `-`, `_`, `.`) at a position.
    pub fn word_at(&self, line: u32, character: u32) -> Option<&'a str> {
        let at = self.offset(line, character)?;
        let is_word = |c: char| c.is_alphanumeric() || matches!(c, '-' | '_' | '.');
        let start = self.text[..at].char_indices().rev().take_while(|(_, c)| is_word(*c)).last().map_or(at, |(i, _)| i);
        let end = at + self.text[at..].chars().take_while(|c| is_word(*c)).map(char::len_utf8).sum::<usize>();
        (start < end).then(|| self.text[start..end].trim_matches('.'))
    }

    /// The symbolic operator under the cursor (`==`, `!=`, `<`, `<=`, `>`, `>=` or `->`), if any.
    pub fn operator_at(&self, line: u32, character: u32) -> Option<&'a str> {
        let at = self.offset(line, character)?;
        let is_op = |c: char| matches!(c, '=' | '!' | '<' | '>' | '-');
        let start = self.text[..at].char_indices().rev().take_while(|(_, c)| is_op(*c)).last().map_or(at, |(i, _)| i);
        let end = at + self.text[at..].chars().take_while(|c| is_op(*c)).map(char::len_utf8).sum::<usize>();
        let run = &self.text[start..end];
        ["==", "!=", "<", "<=", ">", ">=", "->"].contains(&run).then_some(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_utf16_units() {
        // "é" is one UTF-16 unit (two bytes), "😀" two units (four bytes).
        let l = Lines::new("ab\n# é😀 x\nlast");
        let x = "ab\n# é😀 x".find('x').unwrap() as u32;
        assert_eq!(l.position(x), Position { line: 1, character: 6 });
        assert_eq!(l.position(0), Position { line: 0, character: 0 });
        assert_eq!(l.offset(1, 6), Some(x as usize));
        assert_eq!(l.word_at(2, 2), Some("last"));
        assert_eq!(l.word_at(1, 6), Some("x"));
        let ops = Lines::new("a -> gpt-4o\nx >= 2");
        assert_eq!(ops.operator_at(0, 2), Some("->"));
        assert_eq!(ops.operator_at(0, 3), Some("->"));
        assert_eq!(ops.operator_at(0, 8), None, "the dash of a model name");
        assert_eq!(ops.operator_at(1, 3), Some(">="));
    }
}
