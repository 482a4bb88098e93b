//! CRC-16/ARC as used by DSMR 4.x/5.x P1 telegrams.
//!
//! Polynomial 0x8005 processed LSB-first (reflected form 0xA001), initial value 0,
//! no final XOR. It covers every byte from the leading `/` up to and including the `!`
//! and is transmitted as (normally four) upper-case hex digits right after the `!`.

use super::CrcStatus;

/// Number of bytes the CRC takes per step, and of tables.
const SLICES: usize = 16;

/// Slicing-by-16 tables for the reflected polynomial 0xA001, built at compile
/// time: `TABLES[0]` is the classic byte table, `TABLES[k][i]` the CRC of byte `i`
/// followed by `k` zero bytes. Sixteen independent lookups per step instead of a
/// chain of one per byte (8 KiB of tables: they stay in L1 while a telegram is
/// checked) keep the CRC of a 1 KiB telegram near a quarter of a microsecond
/// (see benches/dsmr_decode.rs).
const TABLES: [[u16; 256]; SLICES] = build_tables();

const fn build_tables() -> [[u16; 256]; SLICES] {
    let mut tables = [[0u16; 256]; SLICES];
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
    while k < SLICES {
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
    #[cfg(target_arch = "x86_64")]
    if data.len() >= clmul::MIN_LEN && std::arch::is_x86_feature_detected!("pclmulqdq") {
        // SAFETY: `clmul::crc16_arc` needs only PCLMULQDQ (and SSE2, part of
        // x86_64), which the CPU has just been checked for.
        return unsafe { clmul::crc16_arc(data) };
    }
    update(0, data)
}

/// Continues a CRC-16/ARC over `data` from the register value `crc` (0 to start).
fn update(mut crc: u16, data: &[u8]) -> u16 {
    // Every index below is a byte value (0..=255) into a 256-entry table: cannot panic.
    let t = &TABLES;
    let mut chunks = data.chunks_exact(SLICES);
    for chunk in &mut chunks {
        // The CRC so far folds into the first two bytes; byte `j` of the chunk is
        // followed by `SLICES - 1 - j` more, hence table `SLICES - 1 - j`.
        let mut next = 0u16;
        for (j, &b) in chunk.iter().enumerate() {
            let b = match j {
                0 => b ^ (crc & 0xFF) as u8,
                1 => b ^ (crc >> 8) as u8,
                _ => b,
            };
            next ^= t[SLICES - 1 - j][usize::from(b)];
        }
        crc = next;
    }
    chunks.remainder().iter().fold(crc, |crc, &b| {
        (crc >> 8) ^ t[0][usize::from((crc ^ u16::from(b)) & 0xFF)]
    })
}

/// The CRC with carry-less multiplication (PCLMULQDQ), as zlib and crc32fast do
/// for CRC-32: 16-byte blocks are folded into four accumulators 64 bytes apart,
/// then into one, and the table CRC finishes the last 16 to 31 bytes. Folding by
/// multiplication keeps the remainder modulo the polynomial, and with an initial
/// value of 0 the CRC depends only on that remainder, so the short message left
/// has the CRC of the whole one. Ten times the table version's speed on a 1 KiB
/// telegram.
///
/// Why it works, in the reflected bit order of this CRC (the first byte's bit 0 is
/// the highest power of x): a block `B = H·x⁶⁴ + L` that is `n` bits ahead of block
/// `B'` contributes `B·xⁿ ≡ H·(x^(n+64) mod P) + L·(xⁿ mod P)` there; both
/// products have fewer than 128 bits and are added (XOR) into `B'`. A carry-less
/// product of two bit-reversed 64-bit values comes out shifted by one bit, which the
/// constants absorb by using `x^(n+63)` and `x^(n−1)`.
#[cfg(target_arch = "x86_64")]
mod clmul {
    use std::arch::x86_64::{
        __m128i, _mm_clmulepi64_si128, _mm_cvtsi128_si64, _mm_set_epi64x, _mm_unpackhi_epi64, _mm_xor_si128,
    };

    /// Below this the table version is as fast (and the fold needs 16 bytes).
    pub(super) const MIN_LEN: usize = 128;

    /// x^n mod P for P = x¹⁶ + x¹⁵ + x² + 1 (0x8005), bit-reversed over 64 bits.
    const fn xpow_mod(n: u32) -> i64 {
        let mut r: u32 = 1;
        let mut i = 0;
        while i < n {
            r <<= 1;
            if r & 0x1_0000 != 0 {
                r ^= 0x1_8005;
            }
            i += 1;
        }
        (r as u64).reverse_bits() as i64
    }

    /// Fold constants for blocks 128 bits apart and 512 bits apart, as `(for L, for H)`.
    const K128: (i64, i64) = (xpow_mod(128 - 1), xpow_mod(128 + 63));
    const K512: (i64, i64) = (xpow_mod(512 - 1), xpow_mod(512 + 63));

    #[target_feature(enable = "sse2")]
    fn load(block: &[u8]) -> __m128i {
        let lane = |from: usize| {
            let mut b = [0u8; 8];
            if let Some(src) = block.get(from..from + 8) {
                b.copy_from_slice(src);
            }
            i64::from_le_bytes(b)
        };
        _mm_set_epi64x(lane(8), lane(0))
    }

    /// `acc` moved `k`'s distance forward, added to `next`.
    #[target_feature(enable = "pclmulqdq")]
    fn fold(acc: __m128i, k: __m128i, next: __m128i) -> __m128i {
        let h = _mm_clmulepi64_si128::<0x00>(acc, k);
        let l = _mm_clmulepi64_si128::<0x11>(acc, k);
        _mm_xor_si128(_mm_xor_si128(h, l), next)
    }

    #[target_feature(enable = "pclmulqdq")]
    pub(super) fn crc16_arc(data: &[u8]) -> u16 {
        let k128 = _mm_set_epi64x(K128.0, K128.1);
        let k512 = _mm_set_epi64x(K512.0, K512.1);
        let mut rest = data;
        let mut acc = load(rest);
        rest = rest.get(16..).unwrap_or_default();
        if rest.len() >= 64 + 48 {
            // Four independent chains: the multiplier's latency is hidden.
            let mut lanes = [
                acc,
                load(rest),
                load(rest.get(16..).unwrap_or_default()),
                load(rest.get(32..).unwrap_or_default()),
            ];
            rest = rest.get(48..).unwrap_or_default();
            while rest.len() >= 64 {
                for (i, lane) in lanes.iter_mut().enumerate() {
                    *lane = fold(*lane, k512, load(rest.get(16 * i..).unwrap_or_default()));
                }
                rest = rest.get(64..).unwrap_or_default();
            }
            let [a, b, c, d] = lanes;
            acc = fold(fold(fold(a, k128, b), k128, c), k128, d);
        }
        while rest.len() >= 16 {
            acc = fold(acc, k128, load(rest));
            rest = rest.get(16..).unwrap_or_default();
        }
        let low = _mm_cvtsi128_si64(acc).to_le_bytes();
        let high = _mm_cvtsi128_si64(_mm_unpackhi_epi64(acc, acc)).to_le_bytes();
        super::update(super::update(super::update(0, &low), &high), rest)
    }
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

/// The value of each hex digit, 0x100 for any other byte (then a pair holding
/// one is beyond a byte, whichever side it is on): one load a digit instead of a
/// chain of range tests.
pub(super) const HEX_DIGIT: [u16; 256] = {
    let mut table = [0x100u16; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            c @ b'0'..=b'9' => (c - b'0') as u16,
            c @ b'a'..=b'f' => (c - b'a' + 10) as u16,
            c @ b'A'..=b'F' => (c - b'A' + 10) as u16,
            _ => 0x100,
        };
        b += 1;
    }
    table
};

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
pub(super) fn check_crc(telegram: &[u8]) -> CrcStatus {
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
    fn sliced_and_folded_equal_bitwise_for_every_length() {
        let data: Vec<u8> = (0..2100u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in 0..data.len() {
            let want = crc16_arc_bitwise(&data[..len]);
            assert_eq!(update(0, &data[..len]), want, "tables, length {len}");
            assert_eq!(crc16_arc(&data[..len]), want, "length {len}");
            // Every offset too, so the folds see every alignment.
            let off = len % 17;
            assert_eq!(
                crc16_arc(&data[off..len.max(off)]),
                crc16_arc_bitwise(&data[off..len.max(off)])
            );
        }
        // Runs of one byte value (all-zero and all-one lanes).
        for b in [0x00, 0xFF, 0x80, 0x01] {
            let run = vec![b; 1000];
            assert_eq!(crc16_arc(&run), crc16_arc_bitwise(&run), "run of {b:#x}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn folded_path_is_taken_here() {
        // On a CPU without PCLMULQDQ the test above checked the tables only.
        if std::arch::is_x86_feature_detected!("pclmulqdq") {
            let data = [0x5Au8; 1000];
            // SAFETY: checked just above.
            assert_eq!(unsafe { clmul::crc16_arc(&data) }, crc16_arc_bitwise(&data));
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
