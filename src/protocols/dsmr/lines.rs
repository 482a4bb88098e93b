//! The syntax of a P1 data line, `A-B:C.D.E(g1)(g2)…`: identifier and groups,
//! before any meaning is given to them (that is `decode.rs`). A one-pass reader for
//! the shape nearly every line has, and the general parser for everything else.

use super::obis::Obis;

#[derive(Debug, PartialEq)]
pub(super) enum Line<'a> {
    /// An identifier; its groups were appended to the group vector.
    Object(&'a str),
    /// Only groups (appended): they continue the previous object.
    Continuation,
    Malformed,
}

/// Appends the groups of `(a)(b*u) (c)` to `out`; `false` (and `out` unchanged) if
/// unbalanced, nested or followed by junk.
fn parse_groups<'a>(mut s: &'a str, out: &mut Vec<&'a str>) -> bool {
    let before = out.len();
    loop {
        s = s.trim_ascii_start();
        if s.is_empty() {
            return true;
        }
        let parsed = s.strip_prefix('(').and_then(|rest| {
            // A whole group in double parentheses, `((ER11))` (a firmware code in
            // `1-0:0.2.0`), is one group `(ER11)`; any other nesting is malformed.
            let (inner_start, closing) = match rest.starts_with('(') {
                true => (1, 2),
                false => (0, 1),
            };
            let inner = rest.get(inner_start..)?;
            // The first parenthesis after the opening one(s) must close it.
            // A plain scan: groups are a few bytes long, too short for memchr to pay.
            let close = inner.bytes().position(|b| b == b'(' || b == b')')?;
            let end = inner_start + close;
            let closes = rest.as_bytes().get(end..end + closing)?.iter().all(|&b| b == b')');
            if !closes || inner.as_bytes().get(close) != Some(&b')') {
                return None;
            }
            Some((rest.get(..end + closing - 1)?, rest.get(end + closing..)?))
        });
        match parsed {
            Some((inner, rest)) => {
                out.push(inner);
                s = rest;
            }
            None => {
                out.truncate(before);
                return false;
            }
        }
    }
}

pub(super) fn parse_line<'a>(line: &'a str, groups: &mut Vec<&'a str>) -> Line<'a> {
    // The identifier is about ten bytes: a plain scan beats memchr's set-up.
    let Some(open) = line.bytes().position(|b| b == b'(') else {
        return Line::Malformed;
    };
    let (id, rest) = line.split_at(open);
    let id = id.trim_ascii();
    let space_inside =
        id.bytes().any(|b| b.is_ascii_whitespace()) || (!id.is_ascii() && id.contains(char::is_whitespace));
    if !id.is_empty() && (space_inside || id.starts_with('/')) {
        return Line::Malformed;
    }
    match parse_groups(rest, groups) {
        false => Line::Malformed,
        true if id.is_empty() => Line::Continuation,
        true => Line::Object(id),
    }
}

/// Offset of the first `(`, `)` or LF in `bytes`, sixteen bytes at a time with
/// SSE2 (every x86_64 CPU has it), then eight at a time in an integer: a
/// byte-by-byte loop mispredicts its exit on nearly every group, groups being of
/// every length. Most groups end within their first sixteen bytes.
fn group_end(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    while let Some(chunk) = bytes.get(at..at + 16).and_then(|c| <&[u8; 16]>::try_from(c).ok()) {
        if let Some(p) = super::simd::first_delimiter(chunk) {
            return Some(at + p);
        }
        at += 16;
    }
    /// High bit set in each byte of `word` equal to `byte`, and possibly in bytes
    /// after such a byte (the subtraction's borrow), never before the first one.
    const fn bytes_equal(word: u64, byte: u8) -> u64 {
        const ONES: u64 = 0x0101_0101_0101_0101;
        let x = word ^ (ONES * byte as u64);
        x.wrapping_sub(ONES) & !x & (ONES << 7)
    }
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let found = bytes_equal(word, b'(') | bytes_equal(word, b')') | bytes_equal(word, b'\n');
        if found != 0 {
            // Little-endian: the lowest set bit is the first matching byte.
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = bytes.get(at..)?;
    tail.iter()
        .position(|&c| matches!(c, b'(' | b')' | b'\n'))
        .map(|p| at + p)
}

/// The identifier of the usual line shape, `A-B:C.D.E(`, at `start`: its code and
/// the offset just past the `(`; `None` for anything else (see [`fast_line`]).
fn fast_id(b: &[u8], start: usize) -> Option<(Obis, usize)> {
    // The five numbers, each one to three digits then its separator, read field by
    // field with the digits unrolled: a loop over the bytes mispredicted its way
    // through every field of every line. Above 255 is refused.
    let mut nums = [0u8; 5];
    let mut i = start;
    let digit = |at: usize| b.get(at).map(|&ch| ch.wrapping_sub(b'0')).filter(|&d| d < 10);
    for (num, &sep) in nums.iter_mut().zip(b"-:..(") {
        let mut value = u32::from(digit(i)?);
        i += 1;
        if let Some(d) = digit(i) {
            value = value * 10 + u32::from(d);
            i += 1;
            if let Some(d) = digit(i) {
                value = value * 10 + u32::from(d);
                i += 1;
            }
        }
        if b.get(i) != Some(&sep) {
            return None;
        }
        *num = u8::try_from(value).ok()?;
        i += 1;
    }
    let [a, bb, c, d, e] = nums;
    Some((Obis { a, b: bb, c, d, e }, i))
}

/// Identifiers that [`fast_id`] read in the previous telegram, by line: a meter
/// sends the same lines in the same order every time, so the identifier at the
/// start of line k is nearly always the one line k had before. Told by comparing
/// the line's first 16 bytes, masked to the identifier and its `(`, with what was
/// kept, instead of reading the five numbers again; whatever fails the comparison
/// is read by [`fast_id`]. The same bytes read the same way, so a line gives the
/// same code either way.
#[derive(Debug, Default)]
pub(super) struct KnownIds {
    /// Off for a one-telegram decode, which would only fill it.
    pub(super) on: bool,
    ids: Vec<KnownId>,
}

/// One line's identifier with its `(`, as the little-endian integer of its bytes
/// (zeros past them), the mask of those bytes, and what [`fast_id`] made of them.
#[derive(Debug, Clone, Copy)]
struct KnownId {
    bytes: u128,
    mask: u128,
    len: usize,
    obis: Obis,
}

/// A slot no line matches: it compares all 16 bytes with 0xFF, and the lines read
/// here start with a digit.
const NO_ID: KnownId = KnownId {
    bytes: u128::MAX,
    mask: u128::MAX,
    len: 0,
    obis: Obis {
        a: 0,
        b: 0,
        c: 0,
        d: 0,
        e: 0,
    },
};

/// Lines remembered a telegram: more than any meter sends.
const MAX_KNOWN_IDS: usize = 128;

impl KnownIds {
    /// The 16 bytes at `start`, when there are that many.
    fn word(b: &[u8], start: usize) -> Option<u128> {
        let chunk: [u8; 16] = b.get(start..start + 16)?.try_into().ok()?;
        Some(u128::from_le_bytes(chunk))
    }

    /// [`fast_id`] for line `line` of the telegram, from the previous telegram's
    /// identifier when the bytes are the same.
    #[inline(always)]
    fn read(&mut self, b: &[u8], start: usize, line: usize) -> Option<(Obis, usize)> {
        let word = Self::word(b, start);
        if let (Some(word), Some(known)) = (word, self.ids.get(line)) {
            if word & known.mask == known.bytes {
                return Some((known.obis, start + known.len));
            }
        }
        let (obis, open) = fast_id(b, start)?;
        let len = open - start;
        if let (true, Some(word), true) = (self.on, word, len <= 16) {
            let mask = u128::MAX >> (8 * (16 - len));
            let known = KnownId {
                bytes: word & mask,
                mask,
                len,
                obis,
            };
            if line < MAX_KNOWN_IDS {
                if self.ids.len() <= line {
                    self.ids.resize(line + 1, NO_ID);
                }
                if let Some(slot) = self.ids.get_mut(line) {
                    *slot = known;
                }
            }
        }
        Some((obis, open))
    }
}

/// The shape nearly every P1 line has, `A-B:C.D.E(g1)(g2)…` ended by CR LF, LF or
/// the end of the body, read in one pass over its bytes: identifier, OBIS code and
/// groups at once, where the general path ([`parse_line`], then
/// [`super::obis::parse_obis`]) walks each byte three or four times. Returns the
/// identifier, its code and the offset just past the line, with the groups appended
/// to `groups`; `None` (with `groups` as it was) for anything else — spaces, a `*F`
/// or reduced OBIS form, text after the groups, a group spanning lines — which the
/// general path then reads, so both paths agree on every line this one accepts.
/// `line` is the line's index among the telegram's objects, for `known`.
pub(super) fn fast_line<'a>(
    body: &'a str,
    start: usize,
    groups: &mut Vec<&'a str>,
    known: &mut KnownIds,
    line: usize,
) -> Option<(&'a str, Obis, usize)> {
    let b = body.as_bytes();
    let (obis, mut i) = known.read(b, start, line)?;
    let id = body.get(start..i - 1)?;
    let before = groups.len();
    loop {
        // `i` is just past a `(`; the group ends at the first `)`, and a `(` or a
        // line end before it sends the line to the general path.
        let close = group_end(b.get(i..).unwrap_or_default()).filter(|&p| b.get(i + p) == Some(&b')'));
        let Some(close) = close else {
            groups.truncate(before);
            return None;
        };
        let Some(group) = body.get(i..i + close) else {
            groups.truncate(before);
            return None;
        };
        groups.push(group);
        i += close + 1;
        match (b.get(i), b.get(i + 1)) {
            (Some(b'('), _) => i += 1,
            (Some(b'\r'), Some(b'\n')) => return Some((id, obis, i + 2)),
            (Some(b'\n'), _) => return Some((id, obis, i + 1)),
            (None, _) => return Some((id, obis, i)),
            _ => {
                groups.truncate(before);
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::obis;
    use super::*;

    /// The old shape of `parse_groups`, for readable assertions.
    fn groups_of(s: &str) -> Option<Vec<&str>> {
        let mut out = vec!["before"];
        let ok = parse_groups(s, &mut out);
        if !ok {
            assert_eq!(out, ["before"], "a failed parse must leave the vector as it was");
        }
        ok.then(|| out.split_off(1))
    }

    /// What the general path makes of one line: identifier, code, groups.
    fn general(line: &str) -> Option<(&str, Option<Obis>, Vec<&str>)> {
        let mut groups = Vec::new();
        match parse_line(line.trim_ascii(), &mut groups) {
            Line::Object(id) => Some((id, obis::parse_obis(id), groups)),
            _ => None,
        }
    }

    /// Every line `fast_line` accepts, the general path reads the same way. Lines
    /// from every fixture, then each of them cut, and with one byte replaced by
    /// every byte that means something on a P1 line.
    #[test]
    fn fast_line_agrees_with_the_general_path() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dsmr");
        let mut lines: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "txt") {
                let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
                lines.extend(text.split_inclusive('\n').map(str::to_string));
            }
        }
        assert!(lines.len() > 500, "fixtures not found: {}", lines.len());
        let mut variants = Vec::new();
        for line in &lines {
            variants.push(line.clone());
            for cut in 0..line.len() {
                if let Some(head) = line.get(..cut) {
                    variants.push(head.to_string());
                }
            }
            for at in 0..line.len().min(24) {
                for b in "()*.-:!/ \r\n0129".chars() {
                    let mut v = line.clone().into_bytes();
                    v[at] = b as u8;
                    if let Ok(v) = String::from_utf8(v) {
                        variants.push(v);
                    }
                }
            }
        }
        let mut fast_taken = 0;
        for line in &variants {
            let mut groups = vec!["before"];
            let Some((id, o, next)) = fast_line(line, 0, &mut groups, &mut KnownIds::default(), 0) else {
                assert_eq!(
                    groups,
                    ["before"],
                    "{line:?}: a refused line must leave the groups as they were"
                );
                continue;
            };
            fast_taken += 1;
            // The fast path stops just after the line's LF (or at the end); the general
            // path reads up to that LF.
            let lf = line.find('\n');
            assert_eq!(next, lf.map_or(line.len(), |lf| lf + 1), "{line:?}");
            let own_line = &line[..lf.unwrap_or(line.len())];
            let (gid, go, ggroups) = general(own_line).unwrap_or_else(|| panic!("{line:?}: general path refused it"));
            assert_eq!((id, Some(o), &groups[1..]), (gid, go, &ggroups[..]), "{line:?}");
        }
        assert!(
            fast_taken > lines.len() / 2,
            "the fast path took only {fast_taken} lines"
        );
    }

    #[test]
    fn group_end_finds_the_first_delimiter() {
        let plain = |bytes: &[u8]| bytes.iter().position(|&c| matches!(c, b'(' | b')' | b'\n'));
        let alphabet = b"()\n\x00\x01\x27\x28\x29\x2a\x0a\x0b\x80\xff09*.";
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|k| alphabet[((x >> (k % 50)) as usize + k * 7) % alphabet.len()])
                .collect();
            assert_eq!(group_end(&bytes), plain(&bytes), "{bytes:?}");
        }
        assert_eq!(group_end(b"003808.351*kWh)\r\n"), Some(14));
        assert_eq!(group_end(b"\x00\x00(\x00"), Some(2));
        assert_eq!(group_end(b""), None);
    }

    #[test]
    fn lines() {
        let mut g = Vec::new();
        assert_eq!(parse_line("(00001.001)", &mut g), Line::Continuation);
        assert_eq!(parse_line("***NO CARIER***", &mut g), Line::Malformed);
        assert_eq!(parse_line("1-0:1.8.1 x(1)", &mut g), Line::Malformed);
        assert_eq!(parse_line("1-0:1.8.1(1*kWh)", &mut g), Line::Object("1-0:1.8.1"));
        assert_eq!(g, ["00001.001", "1*kWh"]);
    }

    #[test]
    fn groups() {
        assert_eq!(groups_of("(a)(b*c)"), Some(vec!["a", "b*c"]));
        assert_eq!(groups_of("(a) (b)  "), Some(vec!["a", "b"]));
        assert_eq!(groups_of("()"), Some(vec![""]));
        assert_eq!(groups_of("(a"), None);
        assert_eq!(groups_of("(a)x"), None);
        assert_eq!(groups_of("(a)(b(c))"), None);
        assert_eq!(groups_of("((ER11))"), Some(vec!["(ER11)"]));
        assert_eq!(groups_of("(1)((ER11))(2)"), Some(vec!["1", "(ER11)", "2"]));
        assert_eq!(groups_of("((ER12)"), None);
        assert_eq!(groups_of("(ER13))"), None);
        assert_eq!(groups_of("((a)b)"), None);
        assert_eq!(groups_of("(((a)))"), None);
        assert_eq!(groups_of("(00.193*kW)/ISK5\\2M550E-1012"), None);
    }
}
