//! CRC-16/ARC as used by DSMR 4.x/5.x P1 telegrams.
//!
//! Polynomial 0x8005 processed LSB-first (reflected form 0xA001), initial value 0,
//! no final XOR. It covers every byte from the leading `/` up to and including the `!`
//! and is transmitted as (normally four) upper-case hex digits right after the `!`.

use super::CrcStatus;

/// Slicing-by-8 tables for the reflected polynomial 0xA001, built at compile time:
/// `TABLES[0]` is the classic byte table, `TABLES[k][i]` the CRC of byte `i`
/// followed by `k` zero bytes. Eight bytes per step instead of one keeps the CRC of
/// a 1 KiB telegram well under a microsecond (see benches/dsmr_decode.rs).
const TABLES: [[u16; 256]; 8] = build_tables();

const fn build_tables() -> [[u16; 256]; 8] {
    let mut tables = [[0u16; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u16;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev >> 8) ^ tables[0][(prev & 0xFF) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
}

/// CRC-16/ARC of `data` (init 0x0000, reflected poly 0xA001, no xorout).
pub fn crc16_arc(data: &[u8]) -> u16 {
    // Every index below is a byte value (0..=255) into a 256-entry table: cannot panic.
    let t = &TABLES;
    let mut crc = 0u16;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        // chunks_exact(8) yields 8-byte slices: the conversion always succeeds.
        let Ok([b0, b1, b2, b3, b4, b5, b6, b7]) = <[u8; 8]>::try_from(c) else {
            continue;
        };
        let lo = (crc & 0xFF) as u8 ^ b0;
        let hi = (crc >> 8) as u8 ^ b1;
        crc = t[7][usize::from(lo)]
            ^ t[6][usize::from(hi)]
            ^ t[5][usize::from(b2)]
            ^ t[4][usize::from(b3)]
            ^ t[3][usize::from(b4)]
            ^ t[2][usize::from(b5)]
            ^ t[1][usize::from(b6)]
            ^ t[0][usize::from(b7)];
    }
    chunks.remainder().iter().fold(crc, |crc, &b| {
        (crc >> 8) ^ t[0][usize::from((crc ^ u16::from(b)) & 0xFF)]
    })
}

/// The bit-by-bit definition, to check the tables against.
#[cfg(test)]
fn crc16_arc_bitwise(data: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
        }
    }
    crc
}

/// Value of one ASCII hex digit.
pub(super) fn hex_val(b: u8) -> Option<u16> {
    match b {
        b'0'..=b'9' => Some(u16::from(b - b'0')),
        b'a'..=b'f' => Some(u16::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u16::from(b - b'A' + 10)),
        _ => None,
    }
}

/// Parses the 1–4 hex digits following a `!` (unpadded forms such as `B9F` are
/// accepted). Returns `None` when there are no hex digits at all.
pub(super) fn parse_given(after_bang: &[u8]) -> Option<u16> {
    let mut value: u16 = 0;
    let mut count = 0;
    for &b in after_bang.iter().take(4) {
        match hex_val(b) {
            Some(v) => {
                value = (value << 4) | v;
                count += 1;
            }
            None => break,
        }
    }
    (count > 0).then_some(value)
}

/// Compares the CRC given after the `!` with the one computed over `covered`
/// (which must run from `/` through `!` inclusive).
pub(super) fn status(covered: &[u8], after_bang: &[u8]) -> CrcStatus {
    match parse_given(after_bang) {
        None => CrcStatus::Absent,
        Some(given) => {
            let computed = crc16_arc(covered);
            if given == computed {
                CrcStatus::Valid
            } else {
                CrcStatus::Invalid { given, computed }
            }
        }
    }
}

/// Locates the telegram start (`/` at the beginning of a line, else the first `/`)
/// and its terminating `!` (first `!` outside parentheses after the header line).
/// Returns `(start, bang)` byte offsets.
pub(super) fn locate(telegram: &[u8]) -> Option<(usize, Option<usize>)> {
    let start = find_start(telegram)?;
    let rest = telegram.get(start..)?;
    let header_end = memchr::memchr(b'\n', rest)?;
    let body_start = start + header_end + 1;
    let body = telegram.get(body_start..)?;
    // Jump from `!` to `!` instead of walking every byte through a state machine: a
    // `(` opened earlier on the same line (text messages) makes a `!` data, and
    // parentheses never span lines, so only the candidate's own line is scanned,
    // each byte at most once (`line` carries the state between candidates).
    let mut from = 0;
    let mut line: (usize, bool) = (0, false); // (scanned up to, inside parentheses)
    while let Some(offset) = memchr::memchr(b'!', body.get(from..)?) {
        let bang = from + offset;
        if let Some(lf) = memchr::memrchr(b'\n', body.get(from..bang)?) {
            line = (from + lf + 1, false);
        }
        let in_paren = body.get(line.0..bang)?.iter().fold(line.1, |open, &b| match b {
            b'(' => true,
            b')' => false,
            _ => open,
        });
        if !in_paren {
            return Some((start, Some(body_start + bang)));
        }
        line = (bang, in_paren);
        from = bang + 1;
    }
    Some((start, None))
}

/// First `/` at the start of a line; failing that, the first `/` anywhere.
pub(super) fn find_start(data: &[u8]) -> Option<usize> {
    let first = memchr::memchr(b'/', data)?;
    let at_line_start = memchr::memchr_iter(b'/', data).find(|&i| i == 0 || data.get(i - 1) == Some(&b'\n'));
    Some(at_line_start.unwrap_or(first))
}

/// See [`super::check_crc`].
pub fn check_crc(telegram: &[u8]) -> CrcStatus {
    let Some((start, Some(bang))) = locate(telegram) else {
        return CrcStatus::Absent;
    };
    match (telegram.get(start..=bang), telegram.get(bang + 1..)) {
        (Some(covered), Some(after)) => status(covered, after),
        _ => CrcStatus::Absent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        // CRC-16/ARC check value from the CRC catalogue.
        assert_eq!(crc16_arc(b"123456789"), 0xBB3D);
        assert_eq!(crc16_arc(b""), 0);
    }

    #[test]
    fn sliced_equals_bitwise_for_every_length() {
        let data: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in 0..data.len() {
            assert_eq!(crc16_arc(&data[..len]), crc16_arc_bitwise(&data[..len]), "length {len}");
        }
    }

    #[test]
    fn given_forms() {
        assert_eq!(parse_given(b"4BC6\r\n"), Some(0x4BC6));
        assert_eq!(parse_given(b"B9F\r\n"), Some(0x0B9F));
        assert_eq!(parse_given(b"ab\r\n"), Some(0xAB));
        assert_eq!(parse_given(b"\r\n"), None);
        assert_eq!(parse_given(b""), None);
        assert_eq!(parse_given(b"12345"), Some(0x1234));
    }

    #[test]
    fn check_crc_simple() {
        let body = b"/X\r\n\r\n1-0:1.8.1(1*kWh)\r\n!";
        let crc = crc16_arc(body);
        let mut t = body.to_vec();
        t.extend_from_slice(format!("{crc:04X}\r\n").as_bytes());
        assert_eq!(check_crc(&t), CrcStatus::Valid);
        let mut bad = body.to_vec();
        bad.extend_from_slice(b"0000\r\n");
        assert!(matches!(check_crc(&bad), CrcStatus::Invalid { given: 0, .. }));
        let mut absent = body.to_vec();
        absent.extend_from_slice(b"\r\n");
        assert_eq!(check_crc(&absent), CrcStatus::Absent);
        assert_eq!(check_crc(b"garbage"), CrcStatus::Absent);
    }

    #[test]
    fn bang_inside_parentheses_is_data() {
        let t = b"/X\r\n\r\n0-0:96.13.0(hi!)\r\n!\r\n";
        assert_eq!(locate(t), Some((0, Some(t.len() - 3))));
        let t = b"/X\r\n(a!b!)c!\r\n";
        assert_eq!(locate(t), Some((0, Some(11))));
        let t = b"/X\r\n(a!\r\nb!\r\n";
        assert_eq!(locate(t), Some((0, Some(10))));
        assert_eq!(locate(b"/X\r\n(!!!"), Some((0, None)));
    }

    #[test]
    fn many_bangs_in_parentheses_take_linear_time() {
        let mut t = b"/X\r\n(".to_vec();
        t.extend(std::iter::repeat_n(b'!', 1 << 20));
        let started = std::time::Instant::now();
        assert_eq!(locate(&t), Some((0, None)));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
