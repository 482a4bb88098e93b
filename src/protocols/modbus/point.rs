//! Point decoding: the registers (16-bit words) or bits a device answered with,
//! turned into one typed value. Pure: no socket, no device.
//!
//! Modbus itself only moves 16-bit words, each sent high byte first. Wider values
//! span several consecutive registers, and devices disagree on which comes first:
//! `big` word order (high word first, "ABCD") is what most meters and SunSpec use;
//! `little` ("CDAB") is common on PLCs and some inverters.

use serde::{Deserialize, Serialize};

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterKind {
    /// Read/write 16-bit registers (function 3).
    Holding,
    /// Read-only 16-bit registers (function 4).
    Input,
    /// Read/write bits (function 1).
    Coil,
    /// Read-only bits (function 2).
    Discrete,
}

impl RegisterKind {
    /// Whether the table holds bits rather than 16-bit words.
    pub fn is_bits(self) -> bool {
        matches!(self, RegisterKind::Coil | RegisterKind::Discrete)
    }

    /// The most one read request may ask for, by the Modbus specification
    /// (a response PDU is at most 253 bytes).
    pub fn max_per_request(self) -> u16 {
        if self.is_bits() {
            2000
        } else {
            125
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RegisterKind::Holding => "holding",
            RegisterKind::Input => "input",
            RegisterKind::Coil => "coil",
            RegisterKind::Discrete => "discrete",
        }
    }
}

/// How a point's registers are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    Bool,
    /// Text, two bytes per register, high byte first; `length` registers long.
    String,
}

impl DataType {
    /// Registers (or bits) the value spans; `length` is the string's length in registers.
    pub fn span(self, length: u16) -> u16 {
        match self {
            DataType::U16 | DataType::I16 | DataType::Bool => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String => length,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::Bool => "bool",
            DataType::String => "string",
        }
    }
}

/// Which register of a multi-register value comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WordOrder {
    /// High word first (ABCD): the Modbus convention, SunSpec, Eastron.
    #[default]
    Big,
    /// Low word first (CDAB).
    Little,
}

/// A decoded value before scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Number(f64),
    Text(String),
}

/// The raw value could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("{data_type} needs {need} registers, got {got}")]
    Length {
        data_type: &'static str,
        need: usize,
        got: usize,
    },
    #[error("a floating-point register value is not a number ({0})")]
    NotFinite(f64),
}

/// The words of a multi-register value as one unsigned integer, high word first
/// whatever the device's order.
fn combine(words: &[u16], order: WordOrder) -> u64 {
    let fold = |acc: u64, w: &u16| (acc << 16) | u64::from(*w);
    match order {
        WordOrder::Big => words.iter().fold(0, fold),
        WordOrder::Little => words.iter().rev().fold(0, fold),
    }
}

/// Decodes a register value. `words` must be exactly the point's span.
pub fn decode_words(data_type: DataType, order: WordOrder, words: &[u16]) -> Result<Decoded, DecodeError> {
    let need = usize::from(data_type.span(u16::try_from(words.len()).unwrap_or(u16::MAX)));
    if words.len() != need || need == 0 {
        return Err(DecodeError::Length {
            data_type: data_type.as_str(),
            need,
            got: words.len(),
        });
    }
    let raw = combine(words, order);
    // The `as` casts below reinterpret bits of a value known to fit (the span
    // guarantees raw has exactly 16, 32 or 64 significant bits).
    let number = match data_type {
        DataType::U16 | DataType::U32 | DataType::U64 => raw as f64,
        DataType::I16 => f64::from(raw as u16 as i16),
        DataType::I32 => f64::from(raw as u32 as i32),
        DataType::I64 => raw as i64 as f64,
        DataType::F32 => f64::from(f32::from_bits(raw as u32)),
        DataType::F64 => f64::from_bits(raw),
        DataType::Bool => f64::from(u8::from(raw != 0)),
        DataType::String => return Ok(Decoded::Text(decode_string(words))),
    };
    if !number.is_finite() {
        return Err(DecodeError::NotFinite(number));
    }
    Ok(Decoded::Number(number))
}

/// Text from registers, two bytes each (high byte first). Devices pad with NULs
/// or spaces; both are trimmed. Bytes that are not UTF-8 are replaced, never
/// trusted.
pub fn decode_string(words: &[u16]) -> String {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_owned()
}

/// Decodes a bit (coil or discrete input) as 0 or 1.
pub fn decode_bit(bit: bool) -> Decoded {
    Decoded::Number(f64::from(u8::from(bit)))
}

/// `raw · scale + offset`: how a point's configured scaling applies.
pub fn scale(raw: f64, scale: f64, offset: f64) -> f64 {
    raw * scale + offset
}

/// Encodes a value into registers: the inverse of [`decode_words`], for tests and
/// for serving register images.
pub fn encode_words(data_type: DataType, order: WordOrder, value: f64) -> Vec<u16> {
    let (raw, span): (u64, usize) = match data_type {
        DataType::U16 | DataType::Bool => (value as u16 as u64, 1),
        DataType::I16 => (value as i16 as u16 as u64, 1),
        DataType::U32 => (value as u32 as u64, 2),
        DataType::I32 => (value as i32 as u32 as u64, 2),
        DataType::F32 => ((value as f32).to_bits() as u64, 2),
        DataType::U64 => (value as u64, 4),
        DataType::I64 => (value as i64 as u64, 4),
        DataType::F64 => (value.to_bits(), 4),
        DataType::String => return Vec::new(),
    };
    let mut words: Vec<u16> = (0..span).rev().map(|i| (raw >> (16 * i)) as u16).collect();
    if order == WordOrder::Little {
        words.reverse();
    }
    words
}

/// Why an engineering value cannot be written to a point.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("{0} points cannot be written")]
    NotNumeric(&'static str),
    #[error("{value} is not a multiple of the point's step {step} (raw {raw})")]
    NotAStep { value: f64, step: f64, raw: f64 },
    #[error("{value} needs the raw value {raw}, which does not fit a {data_type}")]
    DoesNotFit {
        value: f64,
        raw: f64,
        data_type: &'static str,
    },
}

/// The registers that make a point read `value` after scaling: the inverse of
/// [`decode_words`] followed by [`scale`]. Integer types take the raw value
/// `(value − offset) / scale` only when it is whole (within rounding), so 21.5
/// with `scale: 0.1` is 215 but 21.55 is refused rather than silently rounded.
pub fn encode_value(
    data_type: DataType,
    order: WordOrder,
    scale: f64,
    offset: f64,
    value: f64,
) -> Result<Vec<u16>, EncodeError> {
    let raw = (value - offset) / scale;
    let range = match data_type {
        DataType::String => return Err(EncodeError::NotNumeric("string")),
        DataType::F32 | DataType::F64 => None,
        DataType::Bool => Some((0.0, 1.0)),
        DataType::U16 => Some((0.0, f64::from(u16::MAX))),
        DataType::I16 => Some((f64::from(i16::MIN), f64::from(i16::MAX))),
        DataType::U32 => Some((0.0, f64::from(u32::MAX))),
        DataType::I32 => Some((f64::from(i32::MIN), f64::from(i32::MAX))),
        // f64 holds integers exactly up to 2^53: beyond that a value is not a step anyway.
        DataType::U64 => Some((0.0, 9_007_199_254_740_992.0)),
        DataType::I64 => Some((-9_007_199_254_740_992.0, 9_007_199_254_740_992.0)),
    };
    let raw = match range {
        None if raw.is_finite() && (data_type == DataType::F64 || raw.abs() <= f64::from(f32::MAX)) => raw,
        None => {
            return Err(EncodeError::DoesNotFit {
                value,
                raw,
                data_type: data_type.as_str(),
            })
        }
        Some((low, high)) => {
            let whole = raw.round();
            if !raw.is_finite() || (raw - whole).abs() > 1e-6 * raw.abs().max(1.0) {
                return Err(EncodeError::NotAStep {
                    value,
                    step: scale,
                    raw,
                });
            }
            if whole < low || whole > high {
                return Err(EncodeError::DoesNotFit {
                    value,
                    raw: whole,
                    data_type: data_type.as_str(),
                });
            }
            whole
        }
    };
    Ok(encode_words(data_type, order, raw))
}

/// Encodes text into `length` registers, NUL-padded.
pub fn encode_string(text: &str, length: u16) -> Vec<u16> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.resize(usize::from(length) * 2, 0);
    bytes.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(t: DataType, o: WordOrder, w: &[u16]) -> f64 {
        match decode_words(t, o, w) {
            Ok(Decoded::Number(v)) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sixteen_bit_values() {
        assert_eq!(num(DataType::U16, WordOrder::Big, &[0xFFFF]), 65535.0);
        assert_eq!(num(DataType::I16, WordOrder::Big, &[0xFFFF]), -1.0);
        assert_eq!(num(DataType::I16, WordOrder::Little, &[0x8000]), -32768.0);
        assert_eq!(num(DataType::Bool, WordOrder::Big, &[0x0100]), 1.0);
        assert_eq!(num(DataType::Bool, WordOrder::Big, &[0]), 0.0);
    }

    #[test]
    fn word_orders() {
        assert_eq!(num(DataType::U32, WordOrder::Big, &[0x0001, 0x0002]), 65538.0);
        assert_eq!(num(DataType::U32, WordOrder::Little, &[0x0002, 0x0001]), 65538.0);
        assert_eq!(num(DataType::I32, WordOrder::Big, &[0xFFFF, 0xFFFE]), -2.0);
        assert_eq!(num(DataType::I32, WordOrder::Little, &[0xFFFE, 0xFFFF]), -2.0);
        // 230.5 as an IEEE 754 single is 0x43668000 (Eastron sends voltages like this).
        assert_eq!(num(DataType::F32, WordOrder::Big, &[0x4366, 0x8000]), 230.5);
        assert_eq!(num(DataType::F32, WordOrder::Little, &[0x8000, 0x4366]), 230.5);
        assert_eq!(num(DataType::U64, WordOrder::Big, &[0, 0, 0x0001, 0x0000]), 65536.0);
        assert_eq!(num(DataType::U64, WordOrder::Little, &[0x0000, 0x0001, 0, 0]), 65536.0);
        assert_eq!(
            num(DataType::I64, WordOrder::Big, &[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF]),
            -1.0
        );
        let pi = encode_words(DataType::F64, WordOrder::Little, std::f64::consts::PI);
        assert_eq!(num(DataType::F64, WordOrder::Little, &pi), std::f64::consts::PI);
    }

    #[test]
    fn encode_is_the_inverse_of_decode() {
        for t in [
            DataType::U16,
            DataType::I16,
            DataType::U32,
            DataType::I32,
            DataType::U64,
            DataType::I64,
            DataType::F32,
            DataType::F64,
        ] {
            for o in [WordOrder::Big, WordOrder::Little] {
                let v = if matches!(t, DataType::U16 | DataType::U32 | DataType::U64) {
                    1234.0
                } else {
                    -1234.0
                };
                assert_eq!(num(t, o, &encode_words(t, o, v)), v, "{t:?} {o:?}");
            }
        }
    }

    #[test]
    fn strings_are_trimmed_of_padding() {
        let words = encode_string("SDM630", 8);
        assert_eq!(words.len(), 8);
        assert_eq!(
            decode_words(DataType::String, WordOrder::Big, &words),
            Ok(Decoded::Text("SDM630".into()))
        );
        // Odd length, space padded, invalid UTF-8 replaced rather than trusted.
        assert_eq!(decode_string(&[0x4142, 0x4320, 0x2020]), "ABC");
        assert_eq!(decode_string(&[0x41FF]), "A\u{FFFD}");
    }

    #[test]
    fn wrong_lengths_and_nan_are_errors() {
        assert!(matches!(
            decode_words(DataType::U32, WordOrder::Big, &[1]),
            Err(DecodeError::Length { .. })
        ));
        assert!(decode_words(DataType::U16, WordOrder::Big, &[]).is_err());
        assert!(matches!(
            decode_words(DataType::F32, WordOrder::Big, &[0x7FC0, 0]),
            Err(DecodeError::NotFinite(_))
        ));
    }

    #[test]
    fn engineering_values_encode_through_scale_and_offset() {
        // 21.5 °C in tenths: raw 215.
        assert_eq!(
            encode_value(DataType::U16, WordOrder::Big, 0.1, 0.0, 21.5),
            Ok(vec![215])
        );
        // −10 with offset −40 and scale 0.5: raw 60.
        assert_eq!(
            encode_value(DataType::I16, WordOrder::Big, 0.5, -40.0, -10.0),
            Ok(vec![60])
        );
        assert_eq!(
            encode_value(DataType::I32, WordOrder::Little, 1.0, 0.0, -2.0),
            Ok(vec![0xFFFE, 0xFFFF])
        );
        assert_eq!(
            encode_value(DataType::F32, WordOrder::Big, 1.0, 0.0, 230.5),
            Ok(vec![0x4366, 0x8000])
        );
        assert!(matches!(
            encode_value(DataType::U16, WordOrder::Big, 0.1, 0.0, 21.55),
            Err(EncodeError::NotAStep { .. })
        ));
        assert!(matches!(
            encode_value(DataType::U16, WordOrder::Big, 1.0, 0.0, -1.0),
            Err(EncodeError::DoesNotFit { .. })
        ));
        assert!(matches!(
            encode_value(DataType::I16, WordOrder::Big, 1.0, 0.0, 40_000.0),
            Err(EncodeError::DoesNotFit { .. })
        ));
        assert_eq!(
            encode_value(DataType::String, WordOrder::Big, 1.0, 0.0, 1.0),
            Err(EncodeError::NotNumeric("string"))
        );
        // Round trip through the decoder and the scaling.
        let words = encode_value(DataType::U32, WordOrder::Little, 0.01, 0.0, 1234.56).unwrap();
        match decode_words(DataType::U32, WordOrder::Little, &words) {
            Ok(Decoded::Number(raw)) => assert!((scale(raw, 0.01, 0.0) - 1234.56).abs() < 1e-9),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scale_and_offset() {
        assert_eq!(scale(2305.0, 0.1, 0.0), 230.5);
        assert_eq!(scale(500.0, 0.1, -40.0), 10.0);
    }
}
