//! Recognising encrypted frames at the start of a buffer: a bare
//! general-global-ciphering APDU (`DB 08 …`, Luxembourg) or an M-Bus long frame
//! (`68 L L 68 C A CI … CS 16`, Austria) carrying one segment of one.

use super::cipher::{ber_length, plausible_security_control};

/// What the bytes at the start of a buffer are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Candidate {
    /// More bytes are needed to tell.
    Incomplete,
    /// Not the start of a frame: skip one byte and look again.
    Not,
    /// A whole APDU of this many bytes (from its 0xDB).
    Apdu(usize),
    /// A checked M-Bus long frame of `len` bytes whose user data (after the CI
    /// field) is `data`; `segment` is the DLMS segment byte (the CI field), `None`
    /// when the CI is not a DLMS one (the frame is someone else's: skipped whole).
    Mbus {
        len: usize,
        segment: Option<u8>,
        data: (usize, usize),
    },
}

/// The bytes before the APDU's content: tag, title length, title.
const APDU_HEAD: usize = 10;
/// Security control byte and frame counter.
const APDU_MIN_CONTENT: usize = 5;

/// Looks at `buf`, which starts at a 0xDB or 0x68 byte. APDUs longer than
/// `max_apdu` are not taken for one (noise that happens to look like a header
/// would otherwise hold everything after it).
pub(super) fn candidate(buf: &[u8], max_apdu: usize) -> Candidate {
    match buf.first() {
        Some(0xDB) => apdu(buf, max_apdu),
        Some(0x68) => mbus(buf),
        Some(_) => Candidate::Not,
        None => Candidate::Incomplete,
    }
}

fn apdu(buf: &[u8], max_apdu: usize) -> Candidate {
    match buf.get(1) {
        None => return Candidate::Incomplete,
        Some(8) => {}
        Some(_) => return Candidate::Not,
    }
    let Some(after_title) = buf.get(APDU_HEAD..) else {
        return Candidate::Incomplete;
    };
    let (len, used) = match ber_length(after_title) {
        None => return Candidate::Incomplete,
        Some(Err(_)) => return Candidate::Not,
        Some(Ok(l)) => l,
    };
    let total = APDU_HEAD + used + len;
    if len < APDU_MIN_CONTENT || total > max_apdu {
        return Candidate::Not;
    }
    match after_title.get(used) {
        None => Candidate::Incomplete,
        Some(&sc) if !plausible_security_control(sc) => Candidate::Not,
        Some(_) if buf.len() < total => Candidate::Incomplete,
        Some(_) => Candidate::Apdu(total),
    }
}

/// M-Bus long frame (EN 13757-2): `68 L L 68`, L bytes from C on, checksum (sum of
/// those L bytes), `16`. DLMS over M-Bus (IEC 62056-7-6) uses CI 0x00–0x1F: the
/// low nibble is the segment number, 0x10 marks the last segment.
fn mbus(buf: &[u8]) -> Candidate {
    let (Some(&l1), Some(&l2), Some(&start2)) = (buf.get(1), buf.get(2), buf.get(3)) else {
        return Candidate::Incomplete;
    };
    if l1 != l2 || start2 != 0x68 || l1 < 3 {
        return Candidate::Not;
    }
    let l = usize::from(l1);
    let len = 4 + l + 2;
    let (Some(body), Some(&checksum), Some(&stop)) = (buf.get(4..4 + l), buf.get(4 + l), buf.get(4 + l + 1)) else {
        return Candidate::Incomplete;
    };
    let sum = body.iter().fold(0u8, |acc, &b| acc.wrapping_add(b));
    if sum != checksum || stop != 0x16 {
        return Candidate::Not;
    }
    // C (control), A (address), CI.
    let ci = body.get(2).copied().unwrap_or(0xFF);
    Candidate::Mbus {
        len,
        segment: (ci <= 0x1F).then_some(ci),
        data: (4 + 3, 4 + l),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apdu_headers_wait_for_their_length_and_reject_implausible_ones() {
        assert_eq!(candidate(&[0xDB], 100), Candidate::Incomplete);
        assert_eq!(candidate(&[0xDB, 9], 100), Candidate::Not);
        let mut frame = vec![0xDB, 8, 1, 2, 3, 4, 5, 6, 7, 8, 7, 0x30, 0, 0, 0, 1, 0xAA, 0xBB];
        assert_eq!(candidate(&frame, 100), Candidate::Apdu(18));
        assert_eq!(candidate(&frame[..17], 100), Candidate::Incomplete);
        assert_eq!(candidate(&frame, 17), Candidate::Not, "over the size limit");
        frame[11] = 0x05; // not encrypted
        assert_eq!(candidate(&frame, 100), Candidate::Not);
        frame[10] = 0x85; // a 5-byte length: never DLMS
        assert_eq!(candidate(&frame, 100), Candidate::Not);
    }

    #[test]
    fn mbus_frames_need_their_checksum_and_stop_byte() {
        let mut frame = vec![0x68, 5, 5, 0x68, 0x53, 0xFF, 0x10, 0x01, 0x67];
        let sum = frame[4..].iter().fold(0u8, |a, &b| a.wrapping_add(b));
        frame.extend_from_slice(&[sum, 0x16]);
        assert_eq!(
            candidate(&frame, 100),
            Candidate::Mbus {
                len: 11,
                segment: Some(0x10),
                data: (7, 9)
            }
        );
        assert_eq!(candidate(&frame[..10], 100), Candidate::Incomplete);
        frame[9] ^= 1;
        assert_eq!(candidate(&frame, 100), Candidate::Not);
    }
}
