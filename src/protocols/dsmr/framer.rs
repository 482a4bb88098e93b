//! Streaming P1 framer: raw serial/TCP bytes in, whole telegrams out.
//!
//! A byte-at-a-time state machine, so the result never depends on how the input is
//! chunked. Rules (see the module docs for the rationale):
//!
//! * A telegram starts with `/` at the beginning of a line (or of the stream) while
//!   hunting. A `/` that follows junk on its line (a NUL or 0xFF from a P1 cable when
//!   the data-request line toggles, half a byte after a baud change) starts one only
//!   if its line is an identification line: `/`, three letters, then up to the line
//!   end nothing a data line has (`(`, `)`, `!`, another `/`). Data lines always hold
//!   `(`, so a `/` in a text message or a value seen while hunting is never a start.
//!   Inside a telegram's data lines a `/` *outside parentheses* (which never
//!   occurs in valid data) starts a new telegram too: the partial one is discarded
//!   as [`FrameError::Truncated`]. A `/` inside `( … )` (text messages such as
//!   `0-0:96.13.0(test-/-test)`) is data.
//! * The telegram ends at the first `!` outside parentheses after the header line,
//!   followed by 0–4 hex CRC digits and CR LF. The frame is emitted at the LF (or at
//!   the first byte that cannot belong to the CRC line; that byte is then treated as
//!   the start of a new line).
//! * Bytes outside telegrams (start-up mid-telegram, gateway junk after `!` such as
//!   the EasyMeter/COM-1 `  25803103` + 0xFF line) are discarded; a run of them
//!   that contains anything but whitespace is reported as [`FrameError::Garbage`]
//!   when the next telegram starts, and its non-whitespace bytes are counted in
//!   [`FramerStats::junk_bytes`].
//! * A telegram growing beyond `max_size` bytes is dropped ([`FrameError::Oversize`]);
//!   the rest of it is skipped silently up to the next header.

use std::collections::VecDeque;

use super::{crc, CrcStatus, Frame, FrameError};

/// Default maximum telegram size (bytes from `/` through the CRC line's LF).
/// Belgian/Luxembourg telegrams with long logs exceed 2 KiB; 8 KiB leaves room.
pub const DEFAULT_MAX_TELEGRAM_SIZE: usize = 8 * 1024;

/// Counters kept by a [`Framer`] since its creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FramerStats {
    /// Frames emitted (any CRC status).
    pub frames: u64,
    /// Emitted frames whose CRC matched.
    pub crc_valid: u64,
    /// Emitted frames whose CRC did not match.
    pub crc_invalid: u64,
    /// Emitted frames without CRC (DSMR 2.2/3.0, IEC 62056-21).
    pub crc_absent: u64,
    /// Telegrams dropped for exceeding the size limit.
    pub oversize: u64,
    /// Partial telegrams dropped because a new header arrived before `!`
    /// (or because [`Framer::reset`] was called).
    pub truncated: u64,
    /// Runs of non-telegram data reported as [`FrameError::Garbage`].
    pub garbage: u64,
    /// Every byte not delivered inside a frame (junk, partial and oversize telegrams).
    pub discarded_bytes: u64,
    /// Non-whitespace bytes skipped between telegrams: line noise, a gateway's own
    /// output, the rest of a telegram the stream was joined in the middle of. Not
    /// the bytes of dropped telegrams (those are `oversize` and `truncated`).
    pub junk_bytes: u64,
}

/// Longest identification line accepted after junk, CR LF included. IEC 62056-21
/// allows `/`, three letters, one character and 16 more: 23 bytes. Real headers stay
/// within that (`/XMX5LGBBFFB231237741`); this leaves room without letting a long
/// run of junk pass for one.
const MAX_IDENTIFICATION_LINE: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Outside a telegram, waiting for `/` at the start of a line.
    Hunting,
    /// A `/` that followed junk on its line, kept (in `buf`) until its line shows
    /// whether it is an identification line.
    Candidate,
    /// In the identification line.
    Header,
    /// In the data lines.
    Body { in_paren: bool },
    /// After `!`: CRC hex digits, optional CR, then LF.
    Crc { digits: u8, cr: bool },
}

/// Streaming telegram framer. Feed bytes with [`push`](Self::push), then call
/// [`next_frame`](Self::next_frame) until it returns `None`.
#[derive(Debug, Clone)]
pub struct Framer {
    max_size: usize,
    state: State,
    line_start: bool,
    buf: Vec<u8>,
    bang: usize,
    junk: usize,
    junk_significant: bool,
    suppress_junk: bool,
    out: VecDeque<Result<Frame, FrameError>>,
    stats: FramerStats,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_TELEGRAM_SIZE)
    }
}

impl Framer {
    /// A framer that drops telegrams longer than `max_size` bytes.
    pub fn new(max_size: usize) -> Self {
        Framer {
            max_size,
            state: State::Hunting,
            line_start: true,
            buf: Vec::new(),
            bang: 0,
            junk: 0,
            junk_significant: false,
            suppress_junk: false,
            out: VecDeque::new(),
            stats: FramerStats::default(),
        }
    }

    /// Appends received bytes (any chunking).
    pub fn push(&mut self, mut data: &[u8]) {
        while let Some((&b, rest)) = data.split_first() {
            // Inside a telegram's data lines only a `/` or `!` outside parentheses
            // changes state (parentheses close by each LF). One SIMD search for the
            // next `/` or `!` over the rest of the input, not one per line; the bytes
            // before it are copied at once, and only the line it is on is walked,
            // for its parentheses. The window is cut short of the size limit, so
            // `step` still sees the byte that would exceed it.
            // The identification line likewise: only its LF (or a `/`, which makes
            // it junk) changes state.
            if self.state == State::Header {
                let room = self.max_size.saturating_sub(self.buf.len());
                let window = data.get(..room.min(data.len())).unwrap_or_default();
                let run = memchr::memchr2(b'\n', b'/', window).unwrap_or(window.len());
                if let (Some(plain), Some(after)) = (data.get(..run), data.get(run..)) {
                    if run > 0 {
                        self.buf.extend_from_slice(plain);
                        data = after;
                        continue;
                    }
                }
            }
            if let State::Body { in_paren } = self.state {
                let room = self.max_size.saturating_sub(self.buf.len());
                let window = data.get(..room.min(data.len())).unwrap_or_default();
                if !window.is_empty() {
                    let special = memchr::memchr2(b'/', b'!', window);
                    let plain = window.get(..special.unwrap_or(window.len())).unwrap_or_default();
                    // Parentheses open at the end of `plain`: those of its last line,
                    // or, when it holds no LF, those carried in from before it.
                    let (line, open) = match memchr::memrchr(b'\n', plain) {
                        Some(lf) => (plain.get(lf + 1..).unwrap_or_default(), false),
                        None => (plain, in_paren),
                    };
                    let open = line.iter().fold(open, |open, &c| match c {
                        b'(' => true,
                        b')' => false,
                        _ => open,
                    });
                    // A `/` or `!` inside parentheses is data: copied with the rest,
                    // and the search goes on after it (each byte searched once).
                    let copied = match special {
                        Some(at) if open => at + 1,
                        _ => plain.len(),
                    };
                    if let (Some(run), Some(after)) = (data.get(..copied), data.get(copied..)) {
                        if copied > 0 {
                            self.buf.extend_from_slice(run);
                            self.state = State::Body { in_paren: open };
                            data = after;
                            continue;
                        }
                    }
                }
            }
            self.step(b);
            data = rest;
        }
    }

    /// The plain byte-at-a-time state machine, for checking [`push`](Self::push)'s
    /// bulk copying against it.
    #[cfg(test)]
    fn push_stepwise(&mut self, data: &[u8]) {
        for &b in data {
            self.step(b);
        }
    }

    /// Next complete frame or framing error, in stream order; `None` when more
    /// input is needed.
    pub fn next_frame(&mut self) -> Option<Result<Frame, FrameError>> {
        self.out.pop_front()
    }

    /// Counters since creation.
    pub fn stats(&self) -> FramerStats {
        self.stats
    }

    /// Configured size limit.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Bytes of the telegram currently being assembled.
    pub fn pending_len(&self) -> usize {
        self.buf.len()
    }

    /// Forget any partial telegram (e.g. after the serial port reconnected); it is
    /// counted as truncated. Already completed frames stay queued.
    pub fn reset(&mut self) {
        if self.state == State::Candidate {
            self.drop_pending_as_junk();
        }
        if !self.buf.is_empty() {
            self.stats.truncated += 1;
            self.stats.discarded_bytes += self.buf.len() as u64;
            self.out.push_back(Err(FrameError::Truncated {
                discarded: self.buf.len(),
            }));
            self.buf.clear();
        }
        self.state = State::Hunting;
        self.line_start = true;
        self.junk = 0;
        self.junk_significant = false;
        self.suppress_junk = false;
    }

    fn step(&mut self, b: u8) {
        match self.state {
            State::Hunting => {
                if b == b'/' && self.line_start {
                    self.start_frame();
                } else if b == b'/' {
                    self.buf.push(b);
                    self.state = State::Candidate;
                } else {
                    self.skip(b);
                    self.line_start = b == b'\n';
                }
            }
            State::Candidate => match identification_byte(&self.buf, b) {
                Identification::Continues => self.buf.push(b),
                Identification::Complete => {
                    self.buf.push(b);
                    self.report_junk();
                    self.state = State::Body { in_paren: false };
                    self.check_size(b);
                }
                Identification::Not => {
                    self.drop_pending_as_junk();
                    self.step(b);
                }
            },
            // An identification line never holds a `/` (IEC 62056-21): the line so
            // far was junk that happened to begin with `/` at a line start.
            State::Header if b == b'/' => {
                self.drop_pending_as_junk();
                self.step(b);
            }
            State::Header => {
                self.buf.push(b);
                if b == b'\n' {
                    self.state = State::Body { in_paren: false };
                }
                self.check_size(b);
            }
            State::Body { in_paren } => match b {
                b'/' if !in_paren => {
                    let discarded = self.buf.len();
                    self.stats.truncated += 1;
                    self.stats.discarded_bytes += discarded as u64;
                    self.out.push_back(Err(FrameError::Truncated { discarded }));
                    self.buf.clear();
                    self.start_frame();
                }
                b'!' if !in_paren => {
                    self.bang = self.buf.len();
                    self.buf.push(b);
                    self.state = State::Crc { digits: 0, cr: false };
                    self.check_size(b);
                }
                _ => {
                    let in_paren = match b {
                        b'(' => true,
                        b')' | b'\n' => false,
                        _ => in_paren,
                    };
                    self.buf.push(b);
                    self.state = State::Body { in_paren };
                    self.check_size(b);
                }
            },
            State::Crc { digits, cr } => {
                if !cr && digits < 4 && crc::hex_val(b).is_some() {
                    self.buf.push(b);
                    self.state = State::Crc { digits: digits + 1, cr };
                    self.check_size(b);
                } else if !cr && b == b'\r' {
                    self.buf.push(b);
                    self.state = State::Crc { digits, cr: true };
                    self.check_size(b);
                } else if b == b'\n' {
                    self.buf.push(b);
                    if self.buf.len() > self.max_size {
                        self.check_size(b);
                    } else {
                        self.finish_frame();
                    }
                } else {
                    // The CRC line ended without LF: emit, then treat `b` as the
                    // first byte of a new line.
                    self.finish_frame();
                    self.step(b);
                }
            }
        }
    }

    /// A byte outside any telegram.
    fn skip(&mut self, b: u8) {
        self.stats.discarded_bytes += 1;
        self.junk += 1;
        if !b.is_ascii_whitespace() {
            self.junk_significant = true;
            // The rest of an oversize telegram is already counted as that.
            if !self.suppress_junk {
                self.stats.junk_bytes += 1;
            }
        }
    }

    /// The bytes held in `buf` turned out not to start a telegram: junk, and the
    /// framer hunts again from the middle of their line.
    fn drop_pending_as_junk(&mut self) {
        let pending = std::mem::take(&mut self.buf);
        for &b in &pending {
            self.skip(b);
        }
        // Reuse the allocation: it is about a telegram's size.
        self.buf = pending;
        self.buf.clear();
        self.state = State::Hunting;
        self.line_start = false;
    }

    /// A telegram starts: the junk before it, if any, is reported.
    fn report_junk(&mut self) {
        if self.junk_significant && !self.suppress_junk {
            self.stats.garbage += 1;
            self.out.push_back(Err(FrameError::Garbage { discarded: self.junk }));
        }
        self.junk = 0;
        self.junk_significant = false;
        self.suppress_junk = false;
    }

    fn start_frame(&mut self) {
        self.report_junk();
        self.buf.clear();
        self.buf.push(b'/');
        self.state = State::Header;
        self.check_size(b'/');
    }

    fn check_size(&mut self, last: u8) {
        if self.buf.len() > self.max_size {
            let discarded = self.buf.len();
            self.stats.oversize += 1;
            self.stats.discarded_bytes += discarded as u64;
            self.out.push_back(Err(FrameError::Oversize {
                discarded,
                max_size: self.max_size,
            }));
            self.buf.clear();
            self.state = State::Hunting;
            self.line_start = last == b'\n';
            self.junk = 0;
            self.junk_significant = false;
            self.suppress_junk = true;
        }
    }

    fn finish_frame(&mut self) {
        // The next telegram is about as long as this one: room for it now, instead
        // of growing from empty (a reallocation at every doubling).
        let next = Vec::with_capacity(self.buf.len());
        let bytes = std::mem::replace(&mut self.buf, next);
        let crc = match (bytes.get(..=self.bang), bytes.get(self.bang + 1..)) {
            (Some(covered), Some(after)) => crc::status(covered, after),
            _ => CrcStatus::Absent,
        };
        self.stats.frames += 1;
        match crc {
            CrcStatus::Valid => self.stats.crc_valid += 1,
            CrcStatus::Invalid { .. } => self.stats.crc_invalid += 1,
            CrcStatus::Absent => self.stats.crc_absent += 1,
        }
        self.out.push_back(Ok(Frame {
            bytes,
            crc,
            bang: Some(self.bang),
        }));
        self.state = State::Hunting;
        self.line_start = true;
    }
}

enum Identification {
    Continues,
    Complete,
    Not,
}

/// Whether `b` continues the identification line `line` (which starts with `/`):
/// three letters (the manufacturer: `ISk`, `KFM`, `XMX`, `Ene`, `FLU`, `NWA`), then
/// printable characters other than `(`, `)`, `/`, `!` up to CR LF. The fourth
/// character is the baud-rate digit in nearly every header, but not in all (Vattenfall's
/// Warmtelink sends `/NWA-WARMTELINK`); the parentheses, which every data line has,
/// are what tells a header from a `/` inside a value or a text message.
fn identification_byte(line: &[u8], b: u8) -> Identification {
    let at = line.len();
    let after_cr = line.last() == Some(&b'\r');
    match b {
        _ if at >= MAX_IDENTIFICATION_LINE => Identification::Not,
        _ if at <= 3 => {
            if b.is_ascii_alphabetic() {
                Identification::Continues
            } else {
                Identification::Not
            }
        }
        // At least one character after the manufacturer.
        b'\r' | b'\n' if at == 4 => Identification::Not,
        b'\n' => Identification::Complete,
        _ if after_cr => Identification::Not,
        b'\r' => Identification::Continues,
        b'(' | b')' | b'/' | b'!' => Identification::Not,
        b' '..=b'~' => Identification::Continues,
        _ => Identification::Not,
    }
}

#[cfg(test)]
mod tests;
