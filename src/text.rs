//! Text from outside (a CA's problem document, a hook's name, a label read
//! from the token) shown on one line.

/// `text` with control characters escaped (`\n`, `\u{1b}`, ...), and the
/// characters that end a line or reorder what follows (U+2028, U+2029, the
/// bidirectional marks, embeddings, overrides and isolates), so that it
/// cannot start a forged line, or show other text than it holds, in a log,
/// a table or a message.
pub(crate) fn one_line(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() || reorders(c) {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// A line or paragraph separator, or a bidirectional formatting character
/// (Unicode's Bidi_Control, UAX #9).
fn reorders(c: char) -> bool {
    matches!(
        c,
        '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            super::one_line("a\nb\r\u{1b}[2Jc\td"),
            "a\\nb\\r\\u{1b}[2Jc\\td"
        );
        assert_eq!(super::one_line("bücher.example"), "bücher.example");
        assert_eq!(
            super::one_line("a\u{2028}b\u{202e}c\u{2066}d"),
            "a\\u{2028}b\\u{202e}c\\u{2066}d"
        );
    }
}
