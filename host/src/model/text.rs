//! Text a task hands the host, made storable. A task is hostile: its run
//! message, events, state and broadcast text may hold any Unicode scalar,
//! including NUL, which PostgreSQL refuses in a `text` value (the whole
//! statement fails) and which SQLite would keep, so the same run would read
//! back differently on the two backends. The store passes every text value
//! it writes through [`storable`], so both backends keep the same thing.
//!
//! NUL becomes U+FFFD, the replacement character, rather than an escape
//! such as `\0`: an escape would read the same as a task that wrote a
//! backslash and a zero, unless every backslash were escaped too, which
//! would change ordinary text. Invalid UTF-8 cannot reach here: a `String`
//! is valid UTF-8, and where the host turns a task's bytes into text (its
//! standard output and error) it decodes them lossily, which puts the same
//! U+FFFD in place of what does not decode. Other control characters are
//! kept as written: every store accepts them, and whoever prints text to a
//! terminal escapes them there (the CLI does).

use std::borrow::Cow;

/// What NUL is replaced with.
pub const NUL_REPLACEMENT: char = char::REPLACEMENT_CHARACTER;

/// `text` with each NUL replaced by U+FFFD; borrowed when it has none.
pub fn storable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_becomes_the_replacement_character() {
        assert_eq!(storable("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
        assert!(matches!(storable("plain \x1b[31m"), Cow::Borrowed(_)));
        assert_eq!(storable(""), "");
    }
}
