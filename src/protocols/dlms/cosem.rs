//! A decrypted DLMS data-notification (`0F …`, Austrian meters) rewritten as a P1
//! text telegram, so the one DSMR decoder (its OBIS table, units, timestamps)
//! reads it like any other.
//!
//! ```text
//! 0F | invoke id and priority (4) | date-time (0x00 absent, or length 0x0C + 12 bytes) | body (A-XDR data)
//! ```
//!
//! The body is a tree of structures and arrays. Meters that name their values
//! (Kaifa of Tiroler Netze and EVN, Sagemcom of several operators) put each
//! value after its OBIS code (an octet string of 6 bytes), optionally followed by
//! a `{scaler, unit}` structure, either as siblings in one structure or in one
//! small structure per value. Every such OBIS/value pair becomes one line
//! `A-B:C.D.E(value*unit)`. Bodies without any OBIS code (values in a fixed,
//! operator-defined order) are [`CosemError::NoObis`]: not guessed at.

use std::fmt::Write as _;

use super::CosemError;

/// Nesting deeper than this is not a meter's notification.
const MAX_DEPTH: usize = 8;

/// One A-XDR data value.
#[derive(Debug, Clone, PartialEq)]
enum Data<'a> {
    Null,
    Container(Vec<Data<'a>>),
    Bytes(&'a [u8]),
    Text(&'a [u8]),
    Int(i128),
    Float(f64),
    Enum(u8),
    Other,
}

/// The telegram text (`/…` header, one line per OBIS value, `!` without CRC).
/// `system_title` names the meter in the header (its first 3 bytes are the
/// manufacturer's FLAG id, as in a P1 header).
pub(super) fn notification_to_telegram(plain: &[u8], system_title: &[u8; 8]) -> Result<Vec<u8>, CosemError> {
    let mut p = Parser { bytes: plain, at: 0 };
    if p.byte()? != 0x0F {
        return Err(CosemError::NotNotification);
    }
    p.take(4)?; // long-invoke-id-and-priority
    let header_time = match p.byte()? {
        0x00 => None,
        0x09 => {
            let n = p.byte()?;
            Some(p.take(usize::from(n))?)
        }
        n => Some(p.take(usize::from(n))?),
    };
    let body = p.data(0)?;

    let mut lines = Vec::new();
    collect(&body, &mut lines);
    if lines.is_empty() {
        return Err(CosemError::NoObis);
    }
    if !lines.iter().any(|l| l.starts_with("0-0:1.0.0(")) {
        if let Some(time) = header_time.and_then(timestamp) {
            lines.insert(0, format!("0-0:1.0.0({time})"));
        }
    }
    let manufacturer: String = match system_title.get(..3) {
        Some(m) if m.iter().all(u8::is_ascii_alphabetic) => m.iter().map(|&b| char::from(b)).collect(),
        _ => "XXX".into(),
    };
    let mut text = format!("/{manufacturer}5DLMS-");
    for b in system_title {
        let _ = write!(text, "{b:02X}");
    }
    text.push_str("\r\n\r\n");
    for line in lines {
        text.push_str(&line);
        text.push_str("\r\n");
    }
    text.push_str("!\r\n");
    Ok(text.into_bytes())
}

/// Walks the tree: inside each container, an OBIS octet string, the value after
/// it and an optional `{scaler, unit}` structure after that make one line.
fn collect(data: &Data<'_>, lines: &mut Vec<String>) {
    let Data::Container(items) = data else { return };
    let mut i = 0;
    while let Some(item) = items.get(i) {
        let obis = match item {
            Data::Bytes(b) => obis(b),
            _ => None,
        };
        match (obis, items.get(i + 1)) {
            (Some(obis), Some(value)) => {
                let scaler_unit = match items.get(i + 2) {
                    Some(Data::Container(su)) => match su.as_slice() {
                        [Data::Int(s), Data::Enum(u)] => i8::try_from(*s).ok().map(|s| (s, *u)),
                        _ => None,
                    },
                    _ => None,
                };
                if let Some(text) = value_text(value, scaler_unit) {
                    lines.push(format!("{obis}({text})"));
                }
                i += if scaler_unit.is_some() { 3 } else { 2 };
            }
            _ => {
                collect(item, lines);
                i += 1;
            }
        }
    }
}

/// `A-B:C.D.E` of a 6-byte OBIS code whose F is 255 (current value); other F
/// groups (billing periods) keep it as `.F`, which the decoder lists as unknown.
fn obis(b: &[u8]) -> Option<String> {
    let [a, b, c, d, e, f] = <[u8; 6]>::try_from(b).ok()?;
    // A is 0 (abstract) or 1 (electricity) on a P1/customer port; anything else in
    // a 6-byte string is an identifier, not an OBIS code.
    if a > 1 {
        return None;
    }
    Some(if f == 255 {
        format!("{a}-{b}:{c}.{d}.{e}")
    } else {
        format!("{a}-{b}:{c}.{d}.{e}.{f}")
    })
}

/// The text between the parentheses of a P1 line, or `None` for a value that has
/// no text form (null, nested data).
fn value_text(value: &Data<'_>, scaler_unit: Option<(i8, u8)>) -> Option<String> {
    let (scaler, unit) = scaler_unit.map_or((0, None), |(s, u)| (s, unit(u)));
    let number = match value {
        Data::Int(n) => decimal(*n, scaler),
        Data::Float(f) => format!("{}", f * 10f64.powi(i32::from(scaler))),
        Data::Enum(e) => e.to_string(),
        // 12 bytes are a date-time, unless they are no date (a 12-character meter
        // number, as EVN sends): then text.
        Data::Bytes(b) => return Some(if b.len() == 12 { timestamp(b) } else { None }.unwrap_or_else(|| text(b))),
        Data::Text(b) => return Some(text(b)),
        Data::Null | Data::Container(_) | Data::Other => return None,
    };
    Some(match unit {
        Some(u) => format!("{number}*{u}"),
        None => number,
    })
}

/// DLMS unit enumeration (IEC 62056-6-2) → the unit text of a P1 line. Units the
/// P1 decoder has no use for get a name it will not match, so the line is kept as
/// unknown rather than read in a default unit.
fn unit(code: u8) -> Option<&'static str> {
    Some(match code {
        27 => "W",
        28 => "VA",
        29 => "var",
        30 => "Wh",
        31 => "VAh",
        32 => "varh",
        33 => "A",
        35 => "V",
        44 => "Hz",
        13 => "m3",
        255 => return None,
        _ => "dlms-unit",
    })
}

/// `value × 10^scaler` written exactly (no float rounding).
fn decimal(value: i128, scaler: i8) -> String {
    let negative = value < 0;
    let mut digits = value.unsigned_abs().to_string();
    if scaler >= 0 {
        digits.extend(std::iter::repeat_n('0', usize::from(scaler.unsigned_abs())));
    } else {
        let places = usize::from(scaler.unsigned_abs());
        if digits.len() <= places {
            digits.insert_str(0, &"0".repeat(places + 1 - digits.len()));
        }
        digits.insert(digits.len() - places, '.');
    }
    if negative {
        digits.insert(0, '-');
    }
    digits
}

/// Printable ASCII as is, anything else (or text with the P1 line's own
/// delimiters) as hex, which the decoder hex-decodes where it is printable.
fn text(b: &[u8]) -> String {
    if b.iter()
        .all(|&c| (b' '..=b'~').contains(&c) && !matches!(c, b'(' | b')' | b'!' | b'/'))
    {
        b.iter().map(|&c| char::from(c)).collect()
    } else {
        b.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02X}");
            s
        })
    }
}

/// A COSEM date-time (12 bytes: year, month, day, weekday, hour, minute, second,
/// hundredths, deviation in minutes, clock status) as a P1 timestamp
/// `YYMMDDhhmmssX`: `S` for UTC+2, `W` for UTC+1 (from the deviation, whose sign
/// meters write either way, else from the status's daylight-saving bit), no
/// suffix when neither is known (the decoder then applies the EU rule).
fn timestamp(b: &[u8]) -> Option<String> {
    let [y1, y0, month, day, _, hour, minute, second, _, d1, d0, status] = <[u8; 12]>::try_from(b).ok()?;
    let year = u16::from_be_bytes([y1, y0]);
    if !(2000..2100).contains(&year) || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let deviation = i16::from_be_bytes([d1, d0]);
    let suffix = match deviation.unsigned_abs() {
        120 => "S",
        60 => "W",
        _ if deviation == i16::MIN && status != 0xFF => {
            if status & 0x80 != 0 {
                "S"
            } else {
                "W"
            }
        }
        _ => "",
    };
    Some(format!(
        "{:02}{month:02}{day:02}{hour:02}{minute:02}{second:02}{suffix}",
        year % 100
    ))
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Parser<'a> {
    fn byte(&mut self) -> Result<u8, CosemError> {
        let b = self.bytes.get(self.at).copied().ok_or(CosemError::CutShort)?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CosemError> {
        let b = self.bytes.get(self.at..self.at + n).ok_or(CosemError::CutShort)?;
        self.at += n;
        Ok(b)
    }

    /// A-XDR length: one byte, or 0x81/0x82 and one or two bytes.
    fn length(&mut self) -> Result<usize, CosemError> {
        match self.byte()? {
            n @ 0..=0x7F => Ok(usize::from(n)),
            0x81 => Ok(usize::from(self.byte()?)),
            0x82 => Ok(usize::from(u16::from_be_bytes([self.byte()?, self.byte()?]))),
            _ => Err(CosemError::Malformed),
        }
    }

    fn int(&mut self, n: usize, signed: bool) -> Result<i128, CosemError> {
        let b = self.take(n)?;
        let unsigned = b.iter().fold(0u128, |acc, &x| (acc << 8) | u128::from(x));
        let bits = 8 * n as u32;
        Ok(if signed && n > 0 && unsigned >> (bits - 1) == 1 {
            unsigned as i128 - (1i128 << bits)
        } else {
            unsigned as i128
        })
    }

    fn data(&mut self, depth: usize) -> Result<Data<'a>, CosemError> {
        if depth > MAX_DEPTH {
            return Err(CosemError::Malformed);
        }
        Ok(match self.byte()? {
            0x00 => Data::Null,
            0x01 | 0x02 => {
                let n = self.length()?;
                // Each element is at least one byte: a count beyond what is left is
                // corrupt, not a reason to allocate.
                if n > self.bytes.len().saturating_sub(self.at) {
                    return Err(CosemError::CutShort);
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.data(depth + 1)?);
                }
                Data::Container(items)
            }
            0x03 | 0x11 => Data::Int(self.int(1, false)?),
            0x04 => {
                let bits = self.length()?;
                self.take(bits.div_ceil(8))?;
                Data::Other
            }
            0x05 => Data::Int(self.int(4, true)?),
            0x06 => Data::Int(self.int(4, false)?),
            0x09 => {
                let n = self.length()?;
                Data::Bytes(self.take(n)?)
            }
            0x0A | 0x0C => {
                let n = self.length()?;
                Data::Text(self.take(n)?)
            }
            0x0D => {
                self.take(1)?;
                Data::Other
            }
            0x0F => Data::Int(self.int(1, true)?),
            0x10 => Data::Int(self.int(2, true)?),
            0x12 => Data::Int(self.int(2, false)?),
            0x14 => Data::Int(self.int(8, true)?),
            0x15 => Data::Int(self.int(8, false)?),
            0x16 => Data::Enum(self.byte()?),
            0x17 => {
                let b = <[u8; 4]>::try_from(self.take(4)?).map_err(|_| CosemError::CutShort)?;
                Data::Float(f64::from(f32::from_be_bytes(b)))
            }
            0x18 => {
                let b = <[u8; 8]>::try_from(self.take(8)?).map_err(|_| CosemError::CutShort)?;
                Data::Float(f64::from_be_bytes(b))
            }
            0x19 => Data::Bytes(self.take(12)?),
            0x1A => {
                self.take(5)?;
                Data::Other
            }
            0x1B => {
                self.take(4)?;
                Data::Other
            }
            _ => return Err(CosemError::Malformed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact() {
        assert_eq!(decimal(2308, -1), "230.8");
        assert_eq!(decimal(0, -2), "0.00");
        assert_eq!(decimal(5, -3), "0.005");
        assert_eq!(decimal(-15, -1), "-1.5");
        assert_eq!(decimal(12, 2), "1200");
        assert_eq!(decimal(9108, 0), "9108");
    }

    #[test]
    fn cosem_times_become_p1_timestamps() {
        // 2021-07-19 15:46:35, deviation -120 min, daylight saving.
        let t = [0x07, 0xE5, 0x07, 0x13, 0x01, 0x0F, 0x2E, 0x23, 0x00, 0xFF, 0x88, 0x80];
        assert_eq!(timestamp(&t).as_deref(), Some("210719154635S"));
        let winter = [0x07, 0xE8, 0x01, 0x02, 0xFF, 0x03, 0x04, 0x05, 0xFF, 0x80, 0x00, 0x00];
        assert_eq!(timestamp(&winter).as_deref(), Some("240102030405W"));
        let unknown = [0x07, 0xE8, 0x01, 0x02, 0xFF, 0x03, 0x04, 0x05, 0xFF, 0x80, 0x00, 0xFF];
        assert_eq!(timestamp(&unknown).as_deref(), Some("240102030405"));
        let unset = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x00, 0xFF];
        assert_eq!(timestamp(&unset), None);
    }

    #[test]
    fn a_twelve_character_serial_is_text_not_a_time() {
        let serial = Data::Bytes(b"181220000009");
        assert_eq!(value_text(&serial, None).as_deref(), Some("181220000009"));
        let binary = Data::Bytes(&[0xFF; 12]);
        assert_eq!(value_text(&binary, None).as_deref(), Some("FFFFFFFFFFFFFFFFFFFFFFFF"));
    }

    #[test]
    fn corrupt_bodies_are_errors_not_panics() {
        let title = *b"KFM\x10\x10\0\0\x23";
        for bad in [
            &b""[..],
            &[0x0F],
            &[0x0F, 0, 0, 0, 1, 0x00],
            &[0x0F, 0, 0, 0, 1, 0x00, 0x02, 0x82, 0xFF, 0xFF],
            &[0x0F, 0, 0, 0, 1, 0x00, 0x02, 0x01, 0x09, 0x06, 1, 0, 1],
            &[0x0F, 0, 0, 0, 1, 0x00, 0x02, 0x01, 0x42],
        ] {
            assert!(notification_to_telegram(bad, &title).is_err(), "{bad:02X?}");
        }
        // Deep nesting stops at the limit.
        let mut deep = vec![0x0F, 0, 0, 0, 1, 0x00];
        deep.extend(std::iter::repeat_n([0x02, 0x01], 64).flatten());
        deep.push(0x00);
        assert!(notification_to_telegram(&deep, &title).is_err());
    }
}
