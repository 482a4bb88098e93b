//! Physical and data-link layer: CRC, byte stuffing, start/stop framing.

use std::fmt;

use super::{KmpError, ESCAPE, START_FROM_METER, START_TO_METER, STOP, STUFFED_BYTES};

/// Direction of a frame, given by its start byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Start byte 0x80: sent by the reader to the meter.
    ToMeter,
    /// Start byte 0x40: sent by the meter.
    FromMeter,
}

impl Direction {
    /// The start byte that opens a frame in this direction.
    pub const fn start_byte(self) -> u8 {
        match self {
            Direction::ToMeter => START_TO_METER,
            Direction::FromMeter => START_FROM_METER,
        }
    }

    /// The direction a start byte announces, if it is one.
    pub const fn from_start_byte(byte: u8) -> Option<Self> {
        match byte {
            START_TO_METER => Some(Direction::ToMeter),
            START_FROM_METER => Some(Direction::FromMeter),
            _ => None,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Direction::ToMeter => f.write_str("to the meter (start byte 0x80)"),
            Direction::FromMeter => f.write_str("from the meter (start byte 0x40)"),
        }
    }
}

/// A decoded, CRC-checked frame (data-link + application header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Direction from the start byte.
    pub direction: Direction,
    /// Destination address (0x3F for the heat meter).
    pub address: u8,
    /// Command id (CID).
    pub command: u8,
    /// Command data, unstuffed, without CRC.
    pub data: Vec<u8>,
}

/// Smallest frame: start, address, command, 2 CRC bytes, stop.
const MIN_FRAME_LEN: usize = 6;
/// Smallest unstuffed body: address, command, 2 CRC bytes.
const MIN_BODY_LEN: usize = 4;

/// CRC-16/CCITT, XMODEM flavour: poly 0x1021, init 0x0000, no reflection,
/// no final XOR.  `crc16(b"123456789") == 0x31C3`.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn needs_stuffing(byte: u8) -> bool {
    STUFFED_BYTES.contains(&byte)
}

/// Append `body` to `out`, escaping reserved bytes as `0x1B, byte ^ 0xFF`.
pub fn stuff(body: &[u8], out: &mut Vec<u8>) {
    out.reserve(body.len());
    for &byte in body {
        if needs_stuffing(byte) {
            out.push(ESCAPE);
            out.push(byte ^ 0xFF);
        } else {
            out.push(byte);
        }
    }
}

/// Undo byte stuffing of the bytes between start and stop byte.
///
/// Errors on a trailing escape byte and on escape sequences that do not
/// decode to a reserved byte.  Unescaped 0x06/0x40/0x80 are tolerated (the
/// CRC still protects the content); a raw 0x0D is rejected by
/// [`decode_frame`] before this is called.
pub fn unstuff(stuffed: &[u8]) -> Result<Vec<u8>, KmpError> {
    let mut out = Vec::with_capacity(stuffed.len());
    let mut iter = stuffed.iter().copied().enumerate();
    while let Some((_, byte)) = iter.next() {
        if byte != ESCAPE {
            out.push(byte);
            continue;
        }
        let (offset, escaped) = iter.next().ok_or(KmpError::DanglingEscape)?;
        let unescaped = escaped ^ 0xFF;
        if !needs_stuffing(unescaped) {
            return Err(KmpError::InvalidEscape {
                offset,
                escaped,
                unescaped,
            });
        }
        out.push(unescaped);
    }
    Ok(out)
}

/// Build a complete frame: start byte, stuffed `address, command, data, CRC`,
/// stop byte.
pub fn encode_frame(direction: Direction, address: u8, command: u8, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(data.len() + 4);
    body.push(address);
    body.push(command);
    body.extend_from_slice(data);
    let crc = crc16(&body);
    body.extend_from_slice(&crc.to_be_bytes());

    let mut out = Vec::with_capacity(body.len() + body.len() / 4 + 2);
    out.push(direction.start_byte());
    stuff(&body, &mut out);
    out.push(STOP);
    out
}

/// Decode and CRC-check one complete frame (start byte … stop byte).
///
/// The whole input must be exactly one frame: a 0x0D anywhere but at the end
/// is an error.  The direction is taken from the start byte; use
/// [`decode_frame_from`] to insist on one.
pub fn decode_frame(raw: &[u8]) -> Result<Frame, KmpError> {
    let (&start, rest) = raw.split_first().ok_or(KmpError::Truncated {
        what: "frame",
        needed: MIN_FRAME_LEN,
        got: 0,
    })?;
    let direction = Direction::from_start_byte(start).ok_or(KmpError::MissingStartByte { found: start })?;
    let (&last, inner) = rest.split_last().ok_or(KmpError::MissingStopByte { found: start })?;
    if last != STOP {
        return Err(KmpError::MissingStopByte { found: last });
    }
    if let Some(pos) = inner.iter().position(|&b| b == STOP) {
        return Err(KmpError::UnexpectedStopByte { offset: pos + 1 });
    }
    let body = unstuff(inner)?;
    if body.len() < MIN_BODY_LEN {
        return Err(KmpError::Truncated {
            what: "frame body (address, command, CRC)",
            needed: MIN_BODY_LEN,
            got: body.len(),
        });
    }
    let (payload, crc_bytes) = body.split_at(body.len() - 2);
    if crc16(&body) != 0 {
        let received = match crc_bytes {
            [hi, lo] => u16::from_be_bytes([*hi, *lo]),
            _ => 0,
        };
        return Err(KmpError::BadCrc {
            received,
            computed: crc16(payload),
        });
    }
    match payload {
        [address, command, data @ ..] => Ok(Frame {
            direction,
            address: *address,
            command: *command,
            data: data.to_vec(),
        }),
        _ => Err(KmpError::Truncated {
            what: "frame body (address, command, CRC)",
            needed: MIN_BODY_LEN,
            got: body.len(),
        }),
    }
}

/// Like [`decode_frame`], but the frame must travel in `expected` direction.
pub fn decode_frame_from(raw: &[u8], expected: Direction) -> Result<Frame, KmpError> {
    match raw.first().copied().and_then(Direction::from_start_byte) {
        Some(found) if found != expected => Err(KmpError::WrongDirection { expected, found }),
        _ => decode_frame(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_check_value() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(&[0x3F, 0x01]), 0x058A);
        assert_eq!(crc16(&[0x3F, 0x02]), 0x35E9);
        assert_eq!(crc16(&[0x3F, 0x10, 0x01, 0x00, 0x80]), 0xD408);
        assert_eq!(crc16(&[]), 0);
    }

    #[test]
    fn stuff_all_reserved_bytes() {
        let mut out = Vec::new();
        stuff(&[0x06, 0x0D, 0x1B, 0x40, 0x80, 0x41], &mut out);
        assert_eq!(out, [0x1B, 0xF9, 0x1B, 0xF2, 0x1B, 0xE4, 0x1B, 0xBF, 0x1B, 0x7F, 0x41]);
        assert_eq!(unstuff(&out).as_deref(), Ok(&[0x06, 0x0D, 0x1B, 0x40, 0x80, 0x41][..]));
    }

    #[test]
    fn unstuff_errors() {
        assert_eq!(unstuff(&[0x3F, 0x1B]), Err(KmpError::DanglingEscape));
        assert_eq!(
            unstuff(&[0x3F, 0x1B, 0x00]),
            Err(KmpError::InvalidEscape {
                offset: 2,
                escaped: 0x00,
                unescaped: 0xFF
            })
        );
    }

    #[test]
    fn direction_mismatch() {
        let frame = encode_frame(Direction::ToMeter, 0x3F, 0x01, &[]);
        assert_eq!(
            decode_frame_from(&frame, Direction::FromMeter),
            Err(KmpError::WrongDirection {
                expected: Direction::FromMeter,
                found: Direction::ToMeter
            })
        );
    }
}
