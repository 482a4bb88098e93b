//! Encrypted P1: DLMS/COSEM general-global-ciphering (AES-128-GCM), as sent by
//! Luxembourg's Smarty meters and several Austrian grid operators' meters.
//!
//! Everything here is pure: bytes in, telegrams or errors out; no I/O, no logging.
//!
//! # What meters send
//!
//! * **Luxembourg (Smarty, Sagemcom T210-D / Kaifa / Landis+Gyr)**: a bare APDU
//!   `DB 08 <system title> <length> 30 <frame counter> <ciphertext> <12-byte tag>`
//!   whose plaintext is an ordinary P1 text telegram (`/…!CRC`). The tag covers
//!   `0x30 ‖ authentication key`; the authentication key is the same for every
//!   Smarty meter and published in its specification, so only the decryption key
//!   (from Creos) is needed.
//! * **Austria (Kaifa MA309 of Tiroler Netze, Salzburg Netz, Netz NÖ / EVN, …)**:
//!   the same APDU, "encryption only" (security control `0x20`/`0x21`, no tag), cut
//!   into M-Bus long frames `68 L L 68 53 FF CI 01 67 … CS 16` (CI `0x00`, `0x01`, …
//!   for the segments, `0x1n` for the last). The plaintext is a DLMS
//!   data-notification (`0F …`) of COSEM structures, which [`cosem`] rewrites as a
//!   P1 text telegram for the same decoder. Meters that send bare values without
//!   OBIS codes (a fixed order that differs per operator) give
//!   [`EncryptedError::Undecodable`]; HDLC-framed meters (`7E A0 …`, Landis+Gyr
//!   E450) are not read.
//!
//! [`EncryptedFramer`] takes the byte stream, finds either kind of frame (skipping
//! noise byte by byte, as the plain framer does), decrypts, verifies the tag, and
//! yields the same [`Frame`]s as [`crate::protocols::dsmr::Framer`]. A frame that
//! does not decrypt (a wrong key, or corrupt bytes) is an error, never a telegram.

pub mod cipher;
mod cosem;
mod framing;

use std::collections::VecDeque;

use super::dsmr::{CrcStatus, Frame, FrameError, Framer};
use framing::Candidate;

/// The keys of one meter.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    encryption: [u8; 16],
    authentication: Option<[u8; 16]>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(***)")
    }
}

impl Keys {
    /// From the hex strings the grid operator hands out (32 hex digits each;
    /// spaces between the digits are ignored).
    pub fn from_hex(encryption: &str, authentication: Option<&str>) -> Result<Keys, KeyError> {
        Ok(Keys {
            encryption: parse_key(encryption)?,
            authentication: authentication.map(parse_key).transpose()?,
        })
    }
}

/// Why a key string is not an AES-128 key. Never holds the key itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("is {0} hex digits long; an AES-128 key is 32 hex digits (16 bytes)")]
    Length(usize),
    #[error("holds a character that is not a hex digit (0-9, a-f) at position {0}")]
    NotHex(usize),
}

/// 32 hex digits → 16 bytes.
pub fn parse_key(hex: &str) -> Result<[u8; 16], KeyError> {
    let digits: Vec<(usize, char)> = hex.chars().enumerate().filter(|(_, c)| !c.is_whitespace()).collect();
    if let Some((at, _)) = digits.iter().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(KeyError::NotHex(at + 1));
    }
    if digits.len() != 32 {
        return Err(KeyError::Length(digits.len()));
    }
    let mut key = [0u8; 16];
    for (byte, pair) in key.iter_mut().zip(digits.chunks(2)) {
        let nibble = |i: usize| pair.get(i).and_then(|(_, c)| c.to_digit(16)).unwrap_or(0) as u8;
        *byte = (nibble(0) << 4) | nibble(1);
    }
    Ok(key)
}

/// Why one APDU could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    #[error("malformed encrypted frame: {0}")]
    Malformed(&'static str),
    #[error("security control byte {0:#04X} is not one this reader decrypts (only AES-GCM, suites 0-2)")]
    Unsupported(u8),
    #[error("the GCM tag does not match: wrong decryption_key (or authentication_key)? or a corrupt frame")]
    TagMismatch,
}

/// Why a decrypted data-notification could not be turned into a telegram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosemError {
    #[error("not a DLMS data-notification (0x0F)")]
    NotNotification,
    #[error("the notification is cut short")]
    CutShort,
    #[error("the notification's data is not valid A-XDR")]
    Malformed,
    #[error("the notification carries no OBIS codes (values in an operator-specific fixed order are not read)")]
    NoObis,
}

/// A dropped encrypted frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncryptedError {
    #[error(transparent)]
    Cipher(#[from] CipherError),
    /// Without a tag (encryption only) a wrong key shows as nonsense plaintext.
    #[error("the decrypted frame is neither a P1 telegram nor a DLMS data-notification: wrong decryption_key?")]
    Garbled,
    #[error("undecodable payload: {0}")]
    Undecodable(CosemError),
    #[error("M-Bus segment {got} arrived where segment {expected} was due; the message is dropped")]
    SegmentLost { expected: u8, got: u8 },
    #[error("the decrypted telegram: {0}")]
    Telegram(FrameError),
}

impl EncryptedError {
    /// Whether a wrong key is the likely cause (every frame fails this way then).
    pub fn wrong_key_likely(&self) -> bool {
        matches!(
            self,
            EncryptedError::Cipher(CipherError::TagMismatch) | EncryptedError::Garbled
        )
    }
}

/// Counters since creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncryptedStats {
    /// Frames decrypted (and verified, where they carry a tag).
    pub decrypted: u64,
    /// Frames dropped as [`EncryptedError`]s.
    pub dropped: u64,
    /// Bytes outside any frame (noise), not counting the bytes of dropped frames.
    pub junk_bytes: u64,
}

/// Room for the APDU's own header and tag around the telegram.
const APDU_OVERHEAD: usize = 64;

/// Streaming reader of encrypted P1: feed bytes with [`push`](Self::push), take
/// [`Frame`]s (plain telegrams) with [`next_frame`](Self::next_frame).
#[derive(Debug)]
pub struct EncryptedFramer {
    keys: Keys,
    max_apdu: usize,
    /// Bytes not yet consumed; never more than one frame's worth plus one read.
    buf: Vec<u8>,
    /// Stream position of `buf[0]`.
    position: u64,
    /// Failed frames are reported once: candidates starting before this stream
    /// position lie inside a frame already reported.
    quiet_until: u64,
    /// The M-Bus segments of the message being assembled.
    segments: Vec<u8>,
    next_segment: Option<u8>,
    /// Transport bytes (STSAP, DTSAP) before the APDU in each segment: 2 for the
    /// meters seen (`01 67`), 0 when the APDU follows the CI directly.
    tsap: usize,
    telegrams: Framer,
    out: VecDeque<Result<Frame, EncryptedError>>,
    stats: EncryptedStats,
}

impl EncryptedFramer {
    /// A reader for telegrams of at most `max_telegram_size` bytes.
    pub fn new(keys: Keys, max_telegram_size: usize) -> Self {
        EncryptedFramer {
            keys,
            max_apdu: max_telegram_size + APDU_OVERHEAD,
            buf: Vec::new(),
            position: 0,
            quiet_until: 0,
            segments: Vec::new(),
            next_segment: None,
            tsap: 2,
            telegrams: Framer::new(max_telegram_size),
            out: VecDeque::new(),
            stats: EncryptedStats::default(),
        }
    }

    /// Next telegram or dropped frame, in stream order; `None` when more input is needed.
    pub fn next_frame(&mut self) -> Option<Result<Frame, EncryptedError>> {
        self.out.pop_front()
    }

    pub fn stats(&self) -> EncryptedStats {
        self.stats
    }

    /// Bytes held back for a frame not complete yet.
    pub fn pending_len(&self) -> usize {
        self.buf.len() + self.segments.len()
    }

    /// Appends received bytes (any chunking).
    pub fn push(&mut self, data: &[u8]) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(rest) = buf.get(start..) {
            let Some(offset) = memchr::memchr2(0xDB, 0x68, rest) else {
                self.skip(start, rest.len());
                start = buf.len();
                break;
            };
            self.skip(start, offset);
            start += offset;
            let at = buf.get(start..).unwrap_or_default();
            match framing::candidate(at, self.max_apdu) {
                Candidate::Incomplete => break,
                Candidate::Not => {
                    self.skip(start, 1);
                    start += 1;
                }
                Candidate::Apdu(len) => {
                    let apdu = at.get(..len).unwrap_or_default();
                    let system_title = apdu_title(apdu);
                    match self.open(apdu) {
                        Ok(plain) => {
                            self.deliver(&plain, &system_title);
                            start += len;
                        }
                        // Maybe noise that looked like a header: look again from the
                        // next byte, so a real frame inside it is still found.
                        Err(e) => {
                            let here = self.position + start as u64;
                            if here >= self.quiet_until {
                                self.drop_frame(e);
                                self.quiet_until = here + len as u64;
                            }
                            self.skip(start, 1);
                            start += 1;
                        }
                    }
                }
                Candidate::Mbus { len, segment, data } => {
                    match segment {
                        Some(ci) => {
                            let payload = at.get(data.0..data.1).unwrap_or_default().to_vec();
                            self.segment(ci, &payload);
                        }
                        None => self.skip(start, len),
                    }
                    start += len;
                }
            }
        }
        buf.drain(..start.min(buf.len()));
        self.position += start as u64;
        self.buf = buf;
    }

    /// Counts skipped bytes as noise, except those of a frame already reported.
    fn skip(&mut self, start: usize, n: usize) {
        let from = self.position + start as u64;
        let quiet = self.quiet_until.saturating_sub(from).min(n as u64);
        self.stats.junk_bytes += n as u64 - quiet;
    }

    fn drop_frame(&mut self, e: EncryptedError) {
        self.stats.dropped += 1;
        self.out.push_back(Err(e));
    }

    fn open(&self, apdu: &[u8]) -> Result<Vec<u8>, EncryptedError> {
        let ciphered = cipher::parse(apdu)?;
        let plain = ciphered.decrypt(&self.keys)?;
        match plain.first() {
            Some(b'/' | 0x0F) => Ok(plain),
            _ => Err(EncryptedError::Garbled),
        }
    }

    /// One M-Bus segment (CI `ci`: the low nibble numbers it, 0x10 marks the last).
    fn segment(&mut self, ci: u8, payload: &[u8]) {
        let number = ci & 0x0F;
        if number == 0 {
            if !self.segments.is_empty() {
                let expected = self.next_segment.unwrap_or(0);
                self.segments.clear();
                self.drop_frame(EncryptedError::SegmentLost { expected, got: 0 });
            }
            self.tsap = if payload.first() == Some(&0xDB) { 0 } else { 2 };
        } else if self.next_segment != Some(number) {
            // A later segment without its start (joined mid-message): noise.
            if let Some(expected) = self.next_segment {
                self.drop_frame(EncryptedError::SegmentLost { expected, got: number });
            } else {
                self.stats.junk_bytes += payload.len() as u64;
            }
            self.segments.clear();
            self.next_segment = None;
            return;
        }
        self.segments
            .extend_from_slice(payload.get(self.tsap..).unwrap_or_default());
        self.next_segment = Some((number + 1) & 0x0F);
        if self.segments.len() > self.max_apdu {
            self.segments.clear();
            self.next_segment = None;
            self.drop_frame(CipherError::Malformed("M-Bus segments add up to more than the size limit").into());
            return;
        }
        if ci & 0x10 == 0 {
            return;
        }
        self.next_segment = None;
        let apdu = std::mem::take(&mut self.segments);
        let whole = framing::candidate(&apdu, self.max_apdu) == Candidate::Apdu(apdu.len());
        let opened = if whole {
            self.open(&apdu)
        } else {
            Err(CipherError::Malformed("the M-Bus segments do not make one APDU").into())
        };
        match opened {
            Ok(plain) => self.deliver(&plain, &apdu_title(&apdu)),
            Err(e) => self.drop_frame(e),
        }
    }

    /// A decrypted plaintext: a text telegram goes through the plain framer (which
    /// checks its CRC), a data-notification is rewritten as one.
    fn deliver(&mut self, plain: &[u8], system_title: &[u8; 8]) {
        if plain.first() == Some(&0x0F) {
            match cosem::notification_to_telegram(plain, system_title) {
                Ok(bytes) => {
                    self.stats.decrypted += 1;
                    self.out.push_back(Ok(Frame {
                        bytes,
                        crc: CrcStatus::Absent,
                        bang: None,
                    }));
                }
                Err(e) => self.drop_frame(EncryptedError::Undecodable(e)),
            }
            return;
        }
        self.telegrams.push(plain);
        if !plain.ends_with(b"\n") {
            // The CRC line's end: without it the framer would wait for the next byte.
            self.telegrams.push(b"\r\n");
        }
        // The plaintext is exactly one telegram: anything still pending is its cut-off
        // part, not the start of the next.
        self.telegrams.reset();
        let mut reported = false;
        while let Some(result) = self.telegrams.next_frame() {
            match result {
                Ok(frame) => {
                    self.stats.decrypted += 1;
                    self.out.push_back(Ok(frame));
                }
                Err(FrameError::Garbage { .. }) => continue,
                Err(e) => self.drop_frame(EncryptedError::Telegram(e)),
            }
            reported = true;
        }
        if !reported {
            self.drop_frame(EncryptedError::Garbled);
        }
    }
}

/// The system title of a whole APDU (checked by [`framing::candidate`]).
fn apdu_title(apdu: &[u8]) -> [u8; 8] {
    let mut title = [0u8; 8];
    if let Some(t) = apdu.get(2..10) {
        title.copy_from_slice(t);
    }
    title
}

#[cfg(test)]
mod tests;
