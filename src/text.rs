//! Text from outside (a CA's problem document, a hook's name, a label read
//! from the token) shown on one line.

/// `text` with control characters escaped (`\n`, `\u{1b}`, ...), so that
/// it cannot start a forged line in a log, a table or a message.
pub fn one_line(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
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
    }
}
