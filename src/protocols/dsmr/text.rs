//! Text of a P1 line: trimming without Unicode tables where none are needed. A
//! leaf, so the OBIS tables and the decoder share it without importing each other.

/// `s.trim()`, without the Unicode tables in the usual case: a text that begins and
/// ends with a visible ASCII character has nothing to trim.
pub(super) fn trim_text(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(first), Some(last)) if first.is_ascii_graphic() && last.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_text_is_trim() {
        for s in [
            "",
            " ",
            "a",
            " a ",
            "\u{b}a\u{b}",
            "\u{a0}x\u{a0}",
            "x\u{85}",
            "\u{2003}y",
            "ab\u{0}",
            "\u{0}ab",
            "é",
            " é ",
            "ISk5\\2MT382-1000",
            "4B384547\r",
        ] {
            assert_eq!(trim_text(s), s.trim(), "{s:?}");
        }
    }
}
