//! Text for a terminal. Process names, thread names, file paths and module names come from the
//! targets (any unprivileged program chooses its own): printed raw, an escape sequence in one of
//! them would drive the terminal of the root user reading covobs' output (retitle it, hide lines,
//! fake a result). Control characters are shown escaped instead.
use std::borrow::Cow;

/// `s` with every control character (ESC, CR, BEL, C1 controls...) escaped as `\u{..}`; line
/// feeds and tabs too, so that one line stays one line.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_line_breaks_are_shown_not_obeyed() {
        assert_eq!(printable("protocol-runner"), "protocol-runner");
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
        assert_eq!(
            printable("a\u{1b}]0;pwned\u{7}b\rc\nd\u{9b}e"),
            "a\\u{1b}]0;pwned\\u{7}b\\u{d}c\\u{a}d\\u{9b}e"
        );
    }
}
