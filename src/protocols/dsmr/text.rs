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

/// `std::str::from_utf8(bytes).ok()`, quicker on what meters send: text that is
/// all ASCII is told by ORing its bytes together, 64 at a time into 64 lanes that
/// the compiler keeps in vector registers, where the standard validation walks it
/// a word or two at a time with a branch each (2 % of a DSMR 5 telegram's
/// decoding went there); anything else goes through the standard validation.
pub(super) fn utf8(bytes: &[u8]) -> Option<&str> {
    let mut lanes = [0u8; 64];
    let mut chunks = bytes.chunks_exact(64);
    for chunk in &mut chunks {
        for (lane, &b) in lanes.iter_mut().zip(chunk) {
            *lane |= b;
        }
    }
    let tail = chunks.remainder().iter().fold(0u8, |seen, &b| seen | b);
    if lanes.iter().fold(tail, |seen, &b| seen | b) < 0x80 {
        // SAFETY: every byte is below 0x80, so the bytes are ASCII, which is UTF-8.
        return Some(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_from_utf8() {
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"ISk5\\2MT382-1000".to_vec(),
            "é 1-0:1.8.1(1*kWh)".as_bytes().to_vec(),
            vec![0x7F; 40],
            vec![0x80],
            vec![b'a', 0xC3],
            vec![0xFF; 33],
        ];
        // Every length around the vector widths, with one byte of every kind at
        // every place.
        for len in 0..70 {
            for at in 0..len {
                for b in [0x00, 0x41, 0x7F, 0x80, 0xC3, 0xFF] {
                    let mut v = vec![b'x'; len];
                    v[at] = b;
                    cases.push(v);
                }
            }
        }
        for bytes in &cases {
            assert_eq!(utf8(bytes), std::str::from_utf8(bytes).ok(), "{bytes:?}");
        }
    }

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
